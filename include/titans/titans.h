/* titans/titans.h: the C API of the titans inference engine (C99; usable from C++).
 *
 * Opaque handles:
 *   titans_model    an immutable model (config + weights) loaded from a model file (or
 *                   converted from another, titans_model_convert). Sessions keep the model they
 *                   run alive, so a model may be freed while its sessions are still in use.
 *   titans_session  one stream through a model: the memories' fast weights, the attention
 *                   caches, the position. Forward tokens or embeddings, generate, save / load
 *                   its state to a file or to a memory buffer, clone, reset.
 *   titans_sampler  a token sampler (greedy, or temperature with top-k and top-p) with its own
 *                   seeded random stream, the one titans_session_generate uses.
 *
 * Errors. Every function that can fail returns a titans_status: TITANS_OK, or the code of the
 * error (the codes of titans::ErrorCode, plus TITANS_OUT_OF_MEMORY and TITANS_INTERNAL).
 * titans_last_error() returns the message of the last failed call of the calling thread. No
 * C++ exception ever leaves this API. A failed call changes nothing: neither the handle it was
 * called on nor its output parameters (with the one exception stated at
 * titans_session_forward: a value that overflows inside the model's stack).
 *
 * Thread safety, in general (each function's comment adds what is particular to it):
 *   - a titans_model is immutable: any number of threads may use one model at the same time
 *     (load sessions from it, query it); titans_model_free must not run concurrently with
 *     another call on the same handle;
 *   - a titans_session (and a titans_sampler) is used by one thread at a time, including as the
 *     source of titans_session_clone, _state_size, _state_get and _save; different sessions,
 *     also of the same model, may run on different threads at the same time;
 *   - the error message is kept per thread.
 *
 * Layouts: row-major float32. V = vocabulary size, d = d_model, n = number of tokens.
 * Sizes of caller-owned arrays are given in elements (floats, tokens) unless named in bytes;
 * an array with room for more elements than a call writes is fine, one with less is refused
 * (TITANS_INVALID_ARGUMENT) before anything changes. A NULL pointer is accepted only where an
 * array has zero elements, or where a comment says so.
 *
 * docs/C_API.md has a complete example.
 */
#ifndef TITANS_TITANS_H
#define TITANS_TITANS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The version of this header's API; titans_c_api_version() returns the library's. */
#define TITANS_C_API_VERSION 2

typedef enum titans_status {
  TITANS_OK = 0,
  TITANS_INVALID_ARGUMENT = 1, /* a bad value: NULL handle, size, token out of range, NaN */
  TITANS_CONFIG = 2,           /* a configuration that is inconsistent or not supported */
  TITANS_IO = 3,               /* a file could not be opened, read, written or renamed */
  TITANS_FORMAT = 4,           /* a file (or state buffer) is malformed, truncated, unknown */
  TITANS_MISMATCH = 5,         /* a well-formed file that belongs to another configuration */
  TITANS_NUMERICAL = 6,        /* a computation overflowed (see titans_session_forward) */
  TITANS_OUT_OF_MEMORY = 7,    /* an allocation failed */
  TITANS_INTERNAL = 8          /* any other failure inside the engine (a bug) */
} titans_status;

/* How a model stores its big product matrices (docs/SEMANTICS.md 3.5): the attention and memory
 * projections, the feed-forward matrices and the LM head. BF16: rounded to bf16 (round to
 * nearest, ties to even) and multiplied with the rounded values widened to float32, so a decode
 * step reads half the bytes of those matrices; every other weight and every session's state
 * stays float32. */
typedef enum titans_weight_type {
  TITANS_WEIGHTS_F32 = 0,
  TITANS_WEIGHTS_BF16 = 1
} titans_weight_type;

typedef struct titans_model titans_model;
typedef struct titans_session titans_session;
typedef struct titans_sampler titans_sampler;

/* ---- Version and errors (never fail; any thread) ---------------------------------------- */

/* The library's version, "MAJOR.MINOR.PATCH" (static storage). */
const char* titans_version(void);
/* The library's TITANS_C_API_VERSION, to check that header and library agree. */
int titans_c_api_version(void);
/* A constant name for a status: "ok", "invalid_argument", "config", "io", "format", "mismatch",
 * "numerical", "out_of_memory", "internal"; "unknown" for other values. */
const char* titans_status_string(titans_status status);
/* The message of the last failed call on the calling thread ("" if none failed yet). Successful
 * calls leave it unchanged. The pointer is valid until the next failing call on this thread. */
const char* titans_last_error(void);

/* ---- Models ------------------------------------------------------------------------------ */

/* Loads a model file (docs/FILE_FORMAT.md) and checks every tensor against its config.
 * *out receives the new model (to free with titans_model_free). Errors: TITANS_IO (missing,
 * unreadable), TITANS_FORMAT (malformed), TITANS_MISMATCH, TITANS_CONFIG. Any thread. */
titans_status titans_model_load(const char* path, titans_model** out);
/* Frees the handle (NULL: nothing). Sessions made from it keep the model alive. */
void titans_model_free(titans_model* model);

/* The model's config as JSON (the "config" metadata of its file), copied into `buffer` with a
 * terminating NUL. *length receives the JSON's length without the NUL. Size query: buffer NULL
 * and buffer_size 0. Otherwise buffer_size must be at least *length + 1. */
titans_status titans_model_config_json(const titans_model* model, char* buffer, size_t buffer_size,
                                       size_t* length);
/* V (0 for a model that takes input embeddings: then only forward_embeddings works). */
titans_status titans_model_vocab_size(const titans_model* model, int32_t* vocab_size);
titans_status titans_model_d_model(const titans_model* model, int32_t* d_model);
titans_status titans_model_layer_count(const titans_model* model, int32_t* layers);
/* How the model stores its product matrices: a file whose product matrices are BF16 loads as
 * TITANS_WEIGHTS_BF16. */
titans_status titans_model_weight_type(const titans_model* model, titans_weight_type* type);

/* A new handle (to free with titans_model_free) of a model with the config and weights of
 * `model`, its product matrices stored as `type`: TITANS_WEIGHTS_BF16 rounds them to bf16,
 * TITANS_WEIGHTS_F32 keeps their values (a bf16 model's rounded ones). A model of another type
 * is a copy of the weights (memory of one more model); one of the same type is the same model
 * under a second handle. `model` is unchanged and may be freed at once. A type outside
 * titans_weight_type, or a weight beyond bf16's range (about 3.4e38), is
 * TITANS_INVALID_ARGUMENT. Any thread. */
titans_status titans_model_convert(const titans_model* model, titans_weight_type type,
                                   titans_model** out);

/* ---- Sessions ---------------------------------------------------------------------------- */

/* A new session at position 0. threads: OpenMP threads for its work (0: the OpenMP default,
 * omp_get_max_threads()); each piece of work runs on them or on one thread, whichever the
 * session measures faster (SessionOptions::adapt_threads, docs/PERFORMANCE.md "Busy cores");
 * negative is TITANS_INVALID_ARGUMENT. Any thread (the model is shared). */
titans_status titans_session_new(const titans_model* model, int32_t threads, titans_session** out);
/* Frees the handle (NULL: nothing). */
void titans_session_free(titans_session* session);
/* An independent copy of the stream (same model, same thread count) at the same position. */
titans_status titans_session_clone(const titans_session* session, titans_session** out);
/* Back to position 0, as new. Never fails for a valid handle; also makes a broken session
 * (TITANS_NUMERICAL) usable again. */
titans_status titans_session_reset(titans_session* session);
/* Tokens fed so far. */
titans_status titans_session_position(const titans_session* session, int64_t* position);

/* Feeds n_tokens tokens and writes their logits [n_tokens, V] into `logits`, which has room
 * for logits_size floats (>= n_tokens * V). A token outside [0, V), a model without vocabulary
 * or a short buffer is TITANS_INVALID_ARGUMENT before anything changes. n_tokens = 0 does
 * nothing.
 * The exception to "a failed call changes nothing": a value that overflows inside the stack
 * (a diverged memory, a loaded state with huge values) returns TITANS_NUMERICAL after some
 * layers took the tokens; the logits are then unspecified and the session refuses forward,
 * generate, clone, save and state_get (TITANS_NUMERICAL) until titans_session_reset or a
 * successful load. TITANS_OUT_OF_MEMORY in the middle of a forward pass can likewise leave
 * the session in an unspecified state: reset or load it. */
titans_status titans_session_forward(titans_session* session, const int32_t* tokens,
                                     size_t n_tokens, float* logits, size_t logits_size);
/* Any model: input embeddings [n_tokens, d] -> hidden states after the final norm
 * [n_tokens, d] in `hidden` (room for hidden_size >= n_tokens * d floats). A NaN or Inf input
 * is TITANS_INVALID_ARGUMENT before anything changes. Otherwise as titans_session_forward. */
titans_status titans_session_forward_embeddings(titans_session* session, const float* embeddings,
                                                size_t n_tokens, float* hidden, size_t hidden_size);

/* ---- Sampling and generation ------------------------------------------------------------- */

typedef struct titans_sampler_params {
  float temperature; /* 0: greedy (argmax); otherwise softmax(logits / temperature) */
  int32_t top_k;     /* keep the k most likely tokens (0: all) */
  float top_p;       /* keep the smallest set whose probability reaches top_p (1: all) */
  uint64_t seed;     /* the random stream (mt19937_64) */
} titans_sampler_params;

/* Greedy: temperature 0, top_k 0, top_p 1, seed 0. Never fails; any thread. */
titans_sampler_params titans_sampler_default_params(void);

/* A sampler with its own random stream seeded with params->seed. Bad params (temperature < 0,
 * top_p outside (0, 1], top_k < 0, NaN) are TITANS_INVALID_ARGUMENT. */
titans_status titans_sampler_new(const titans_sampler_params* params, titans_sampler** out);
void titans_sampler_free(titans_sampler* sampler); /* NULL: nothing */
/* Draws one token from `logits` [n_logits] (for example the last row of a forward's logits).
 * Empty or non-finite logits are TITANS_INVALID_ARGUMENT (and the random stream is not
 * advanced). */
titans_status titans_sampler_sample(titans_sampler* sampler, const float* logits, size_t n_logits,
                                    int32_t* token);

/* Called with each new token as soon as it is drawn; return 0 to go on, nonzero to stop after
 * this token. It must not call functions on the session that is generating. */
typedef int (*titans_token_callback)(int32_t token, void* user_data);

/* Feeds the prompt, then draws up to max_new_tokens tokens one at a time with a sampler of
 * `params` (NULL: greedy), calling `callback` with each and feeding each back into the
 * session, except the last one (as titans::Session::Generate). A callback that returns
 * nonzero stops generation after that token: the session then stands as if max_new_tokens had
 * been the number of tokens delivered. *n_generated (may be NULL) receives that number.
 * The prompt must not be empty when max_new_tokens > 0. Every argument is checked before
 * anything runs, and the generation runs on a copy of the session's state that replaces it
 * only when the call succeeds: a failed call leaves the session as it was (it may have
 * delivered tokens to the callback before it failed). That copy costs one state's memory. */
titans_status titans_session_generate(titans_session* session, const int32_t* prompt,
                                      size_t n_prompt, int32_t max_new_tokens,
                                      const titans_sampler_params* params,
                                      titans_token_callback callback, void* user_data,
                                      int32_t* n_generated);

/* ---- Session state ----------------------------------------------------------------------- */

/* Session files (docs/FILE_FORMAT.md), written atomically (temporary file + rename). Load
 * checks that the file was saved for this model's config (TITANS_MISMATCH otherwise), is well
 * formed (TITANS_FORMAT) and readable (TITANS_IO); on any error the session is unchanged. */
titans_status titans_session_save(const titans_session* session, const char* path);
titans_status titans_session_load(titans_session* session, const char* path);

/* The same state in a caller-owned buffer: exactly the bytes titans_session_save writes to a
 * file. titans_session_state_size gives their number, titans_session_state_get copies them
 * into `buffer` (buffer_size >= that number, else TITANS_INVALID_ARGUMENT) and sets *written
 * (may be NULL). Both serialise the whole state, so each costs time and temporary memory of
 * the state's size. titans_session_state_set makes the checks of titans_session_load; the
 * buffer is not kept after the call. */
titans_status titans_session_state_size(const titans_session* session, size_t* size);
titans_status titans_session_state_get(const titans_session* session, void* buffer,
                                       size_t buffer_size, size_t* written);
titans_status titans_session_state_set(titans_session* session, const void* buffer,
                                       size_t buffer_size);

/* ---- Memory health (optional monitoring) ------------------------------------------------- */

typedef struct titans_memory_health {
  int32_t layer;        /* index of the memory layer in the model's stack */
  int32_t finite;       /* 1: no NaN or Inf in the fast weights or the momentum */
  int32_t all_zero;     /* 1: every fast weight is exactly 0 (the memory is dead) */
  int64_t position;     /* the memory's position */
  double weights_norm;  /* Frobenius norm of the fast weights */
  double initial_norm;  /* ... of the model's initial fast weights W0 (their scale) */
  double momentum_norm; /* ... of the momentum (0 without) */
} titans_memory_health;

/* One entry per memory layer, in layer order. *count receives their number; `health` has room
 * for `capacity` entries (>= *count; count query: health NULL and capacity 0). */
titans_status titans_session_health(const titans_session* session, titans_memory_health* health,
                                    size_t capacity, size_t* count);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* TITANS_TITANS_H */
