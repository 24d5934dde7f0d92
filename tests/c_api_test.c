/* c_api_test.c: the C API (include/titans/titans.h), compiled as C99: every function, every
 * error path a caller can reach.
 *
 *   c_api_test MODEL_A MODEL_B MODEL_EMB SCRATCH_DIR
 *
 * MODEL_A: a token model (titans make-model, the default: mag, 2 layers, d 64, V 256);
 * MODEL_B: a model of another config (its states do not fit A's sessions);
 * MODEL_EMB: a model without vocabulary (vocab_size 0, input embeddings);
 * SCRATCH_DIR: an existing directory for the files the test writes.
 * tests/CMakeLists.txt makes the models with the titans program. Prints one line per failed
 * check and exits 1 if any failed. */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "titans/titans.h"

static int failures = 0;
static int checks = 0;

#define CHECK(cond)                                                            \
  do {                                                                         \
    ++checks;                                                                  \
    if (!(cond)) {                                                             \
      ++failures;                                                              \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
    }                                                                          \
  } while (0)

/* The call returns `expected`; on an unexpected failure prints the last error. */
#define EXPECT_STATUS(expected, call)                                                              \
  do {                                                                                             \
    titans_status got_ = (call);                                                                   \
    ++checks;                                                                                      \
    if (got_ != (expected)) {                                                                      \
      ++failures;                                                                                  \
      fprintf(stderr, "%s:%d: %s returned %s, expected %s (last error: %s)\n", __FILE__, __LINE__, \
              #call, titans_status_string(got_), titans_status_string(expected),                   \
              titans_last_error());                                                                \
    }                                                                                              \
  } while (0)
#define EXPECT_OK(call) EXPECT_STATUS(TITANS_OK, call)

static const char* model_a_path;
static const char* model_b_path;
static const char* model_emb_path;
static const char* scratch;

enum { V = 256, D = 64 };

static char* Path(const char* name) {
  static char buffers[8][4096];
  static int next = 0;
  char* p = buffers[next++ % 8];
  snprintf(p, sizeof buffers[0], "%s/%s", scratch, name);
  return p;
}

static void WriteFile(const char* path, const void* data, size_t size) {
  FILE* f = fopen(path, "wb");
  if (f == NULL) {
    fprintf(stderr, "cannot write %s\n", path);
    exit(2);
  }
  if (size > 0 && fwrite(data, 1, size, f) != size) exit(2);
  fclose(f);
}

/* The file's bytes (malloc'd) and their number. */
static unsigned char* ReadFile(const char* path, size_t* size) {
  FILE* f = fopen(path, "rb");
  long n;
  unsigned char* data;
  if (f == NULL) return NULL;
  fseek(f, 0, SEEK_END);
  n = ftell(f);
  fseek(f, 0, SEEK_SET);
  data = (unsigned char*)malloc(n > 0 ? (size_t)n : 1);
  if (data == NULL || fread(data, 1, (size_t)n, f) != (size_t)n) exit(2);
  fclose(f);
  *size = (size_t)n;
  return data;
}

static int Equal(const float* a, const float* b, size_t n) {
  return memcmp(a, b, n * sizeof(float)) == 0;
}

/* Equal within float rounding: the fast path groups a call's tokens, so a token's outputs in a
 * call of one token and in a call of many may differ in the last bits. */
static int Close(const float* a, const float* b, size_t n) {
  size_t i;
  for (i = 0; i < n; ++i) {
    if (fabsf(a[i] - b[i]) > 1e-4f * (1.0f + fabsf(b[i]))) return 0;
  }
  return 1;
}

static int Contains(const char* text, const char* part) { return strstr(text, part) != NULL; }

static int64_t Position(const titans_session* s) {
  int64_t p = -1;
  EXPECT_OK(titans_session_position(s, &p));
  return p;
}

static titans_session* NewSession(const titans_model* m) {
  titans_session* s = NULL;
  EXPECT_OK(titans_session_new(m, 1, &s));
  if (s == NULL) exit(2);
  return s;
}

static const int32_t kPrompt[8] = {84, 105, 116, 97, 110, 115, 32, 108};
static const int32_t kMore[5] = {101, 97, 114, 110, 46};

static void TestVersionAndStatus(void) {
  const char* v = titans_version();
  CHECK(v != NULL && strlen(v) >= 5 && strchr(v, '.') != NULL);
  CHECK(titans_c_api_version() == TITANS_C_API_VERSION);
  CHECK(strcmp(titans_status_string(TITANS_OK), "ok") == 0);
  CHECK(strcmp(titans_status_string(TITANS_INVALID_ARGUMENT), "invalid_argument") == 0);
  CHECK(strcmp(titans_status_string(TITANS_CONFIG), "config") == 0);
  CHECK(strcmp(titans_status_string(TITANS_IO), "io") == 0);
  CHECK(strcmp(titans_status_string(TITANS_FORMAT), "format") == 0);
  CHECK(strcmp(titans_status_string(TITANS_MISMATCH), "mismatch") == 0);
  CHECK(strcmp(titans_status_string(TITANS_NUMERICAL), "numerical") == 0);
  CHECK(strcmp(titans_status_string(TITANS_OUT_OF_MEMORY), "out_of_memory") == 0);
  CHECK(strcmp(titans_status_string(TITANS_INTERNAL), "internal") == 0);
  CHECK(strcmp(titans_status_string((titans_status)99), "unknown") == 0);
  CHECK(strcmp(titans_last_error(), "") == 0); /* nothing failed yet on this thread */
}

static void TestModelLoadErrors(void) {
  titans_model* m = NULL;
  static const char garbage[] = "this is not a safetensors file at all";
  unsigned char truncated[8] = {255, 255, 255, 255, 0, 0, 0, 0};

  EXPECT_STATUS(TITANS_INVALID_ARGUMENT, titans_model_load(NULL, &m));
  CHECK(m == NULL);
  CHECK(Contains(titans_last_error(), "titans_model_load"));
  EXPECT_STATUS(TITANS_INVALID_ARGUMENT, titans_model_load(model_a_path, NULL));
  EXPECT_STATUS(TITANS_IO, titans_model_load(Path("no_such_model.safetensors"), &m));
  CHECK(m == NULL);
  CHECK(Contains(titans_last_error(), "no_such_model.safetensors"));
  EXPECT_STATUS(TITANS_IO, titans_model_load(scratch, &m)); /* a directory */
  WriteFile(Path("garbage.safetensors"), garbage, sizeof garbage);
  EXPECT_STATUS(TITANS_FORMAT, titans_model_load(Path("garbage.safetensors"), &m));
  WriteFile(Path("short.safetensors"), truncated, 3);
  EXPECT_STATUS(TITANS_FORMAT, titans_model_load(Path("short.safetensors"), &m));
  WriteFile(Path("huge_header.safetensors"), truncated, sizeof truncated);
  EXPECT_STATUS(TITANS_FORMAT, titans_model_load(Path("huge_header.safetensors"), &m));
  CHECK(m == NULL);
  titans_model_free(NULL); /* nothing */
}

static void TestModelInfo(const titans_model* a, const titans_model* emb) {
  size_t length = 0, length2 = 12345;
  char* json;
  char small[8];
  int32_t value = -1;

  EXPECT_OK(titans_model_config_json(a, NULL, 0, &length));
  CHECK(length > 10);
  json = (char*)malloc(length + 1);
  EXPECT_STATUS(TITANS_INVALID_ARGUMENT, titans_model_config_json(a, json, length, &length2));
  CHECK(length2 == 12345); /* a failed call changes nothing */
  EXPECT_STATUS(TITANS_INVALID_ARGUMENT, titans_model_config_json(a, NULL, 10, &length2));
  EXPECT_STATUS(TITANS_INVALID_ARGUMENT,
                titans_model_config_json(a, small, sizeof small, &length2));
  EXPECT_STATUS(TITANS_INVALID_ARGUMENT, titans_model_config_json(a, json, length + 1, NULL));
  EXPECT_STATUS(TITANS_INVALID_ARGUMENT,
                titans_model_config_json(NULL, json, length + 1, &length2));
  EXPECT_OK(titans_model_config_json(a, json, length + 1, &length2));
  CHECK(length2 == length && strlen(json) == length && json[0] == '{' && json[length - 1] == '}');
  CHECK(Contains(json, "\"vocab_size\":256") && Contains(json, "\"d_model\":64"));
  free(json);

  EXPECT_OK(titans_model_vocab_size(a, &value));
  CHECK(value == V);
  EXPECT_OK(titans_model_d_model(a, &value));
  CHECK(value == D);
  EXPECT_OK(titans_model_layer_count(a, &value));
  CHECK(value == 2);
  EXPECT_OK(titans_model_vocab_size(emb, &value));
  CHECK(value == 0);
  EXPECT_STATUS(TITANS_INVALID_ARGUMENT, titans_model_vocab_size(NULL, &value));
  EXPECT_STATUS(TITANS_INVALID_ARGUMENT, titans_model_vocab_size(a, NULL));
  EXPECT_STATUS(TITANS_INVALID_ARGUMENT, titans_model_d_model(NULL, &value));
  EXPECT_STATUS(TITANS_INVALID_ARGUMENT, titans_model_d_model(a, NULL));
  EXPECT_STATUS(TITANS_INVALID_ARGUMENT, titans_model_layer_count(NULL, &value));
  EXPECT_STATUS(TITANS_INVALID_ARGUMENT, titans_model_layer_count(a, NULL));
  CHECK(value == 0); /* unchanged by the failed calls */
}

/* Relative difference of two arrays, |a - b| / |b| (Frobenius norms). */
static double RelativeDiff(const float* a, const float* b, size_t n) {
  double diff = 0, norm = 0;
  size_t i;
  for (i = 0; i < n; ++i) {
    diff += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
    norm += (double)b[i] * b[i];
  }
  return sqrt(diff / (norm > 1e-30 ? norm : 1e-30));
}

/* The logits [8, V] of kPrompt through a fresh session of `m`. */
static void PromptLogits(const titans_model* m, float* logits) {
  titans_session* s = NewSession(m);
  EXPECT_OK(titans_session_forward(s, kPrompt, 8, logits, 8 * V));
  titans_session_free(s);
}

static void TestWeightType(const titans_model* a) {
  titans_model* bf16 = NULL;
  titans_model* back = NULL;
  titans_model* same = NULL;
  titans_model* untouched = NULL;
  titans_weight_type type = TITANS_WEIGHTS_BF16;
  float* f32_logits = (float*)malloc(sizeof(float) * 8 * V);
  float* bf16_logits = (float*)malloc(sizeof(float) * 8 * V);
  float* logits = (float*)malloc(sizeof(float) * 8 * V);

  EXPECT_OK(titans_model_weight_type(a, &type));
  CHECK(type == TITANS_WEIGHTS_F32); /* made by titans make-model: float32 */
  EXPECT_OK(titans_model_convert(a, TITANS_WEIGHTS_BF16, &bf16));
  if (bf16 == NULL) exit(2);
  EXPECT_OK(titans_model_weight_type(bf16, &type));
  CHECK(type == TITANS_WEIGHTS_BF16);
  EXPECT_OK(titans_model_weight_type(a, &type));
  CHECK(type == TITANS_WEIGHTS_F32); /* the source is unchanged */

  /* bf16 weights: close to the float32 model's logits, not equal (rounded weights). */
  PromptLogits(a, f32_logits);
  PromptLogits(bf16, bf16_logits);
  CHECK(!Equal(bf16_logits, f32_logits, 8 * V));
  CHECK(RelativeDiff(bf16_logits, f32_logits, 8 * V) < 0.05);

  /* Back to float32: the rounded values kept, so the bf16 model's logits (up to the order of
   * sums). To the same type: the same model under a second handle. */
  EXPECT_OK(titans_model_convert(bf16, TITANS_WEIGHTS_F32, &back));
  EXPECT_OK(titans_model_convert(bf16, TITANS_WEIGHTS_BF16, &same));
  if (back == NULL || same == NULL) exit(2);
  EXPECT_OK(titans_model_weight_type(back, &type));
  CHECK(type == TITANS_WEIGHTS_F32);
  EXPECT_OK(titans_model_weight_type(same, &type));
  CHECK(type == TITANS_WEIGHTS_BF16);
  PromptLogits(same, logits);
  CHECK(Equal(logits, bf16_logits, 8 * V));
  /* A converted model outlives the handle it was made from. */
  titans_model_free(bf16);
  titans_model_free(same);
  PromptLogits(back, logits);
  CHECK(Close(logits, bf16_logits, 8 * V));
  titans_model_free(back);

  /* Errors: nothing changes. */
  EXPECT_STATUS(TITANS_INVALID_ARGUMENT, titans_model_weight_type(NULL, &type));
  EXPECT_STATUS(TITANS_INVALID_ARGUMENT, titans_model_weight_type(a, NULL));
  CHECK(type == TITANS_WEIGHTS_BF16);
  EXPECT_STATUS(TITANS_INVALID_ARGUMENT,
                titans_model_convert(NULL, TITANS_WEIGHTS_BF16, &untouched));
  CHECK(Contains(titans_last_error(), "titans_model_convert") &&
        Contains(titans_last_error(), "model is NULL"));
  EXPECT_STATUS(TITANS_INVALID_ARGUMENT, titans_model_convert(a, TITANS_WEIGHTS_BF16, NULL));
  EXPECT_STATUS(TITANS_INVALID_ARGUMENT,
                titans_model_convert(a, (titans_weight_type)2, &untouched));
  CHECK(Contains(titans_last_error(), "type 2 is not a titans_weight_type"));
  EXPECT_STATUS(TITANS_INVALID_ARGUMENT,
                titans_model_convert(a, (titans_weight_type)-1, &untouched));
  CHECK(untouched == NULL);

  free(f32_logits);
  free(bf16_logits);
  free(logits);
}

static void TestSessionLifecycle(const titans_model* a) {
  titans_session* s = NULL;
  titans_session* c = NULL;
  int64_t position = 77;

  EXPECT_STATUS(TITANS_INVALID_ARGUMENT, titans_session_new(NULL, 1, &s));
  EXPECT_STATUS(TITANS_INVALID_ARGUMENT, titans_session_new(a, -1, &s));
  EXPECT_STATUS(TITANS_INVALID_ARGUMENT, titans_session_new(a, 1, NULL));
  CHECK(s == NULL);
  EXPECT_OK(titans_session_new(a, 0, &s)); /* 0: the OpenMP default */
  CHECK(Position(s) == 0);
  EXPECT_STATUS(TITANS_INVALID_ARGUMENT, titans_session_position(NULL, &position));
  EXPECT_STATUS(TITANS_INVALID_ARGUMENT, titans_session_position(s, NULL));
  CHECK(position == 77);
  EXPECT_STATUS(TITANS_INVALID_ARGUMENT, titans_session_clone(NULL, &c));
  EXPECT_STATUS(TITANS_INVALID_ARGUMENT, titans_session_clone(s, NULL));
  CHECK(c == NULL);
  EXPECT_STATUS(TITANS_INVALID_ARGUMENT, titans_session_reset(NULL));
  titans_session_free(s);
  titans_session_free(NULL);
}

static void TestForward(const titans_model* a, const titans_model* emb) {
  titans_session* s = NewSession(a);
  titans_session* pieces = NewSession(a);
  titans_session* e = NewSession(emb);
  float* logits = (float*)malloc(sizeof(float) * 8 * V);
  float* piece_logits = (float*)malloc(sizeof(float) * 8 * V);
  float* first = (float*)malloc(sizeof(float) * 8 * V);
  float embeddings[3 * D], hidden[3 * D], hidden2[3 * D];
  int32_t bad[3] = {1, V, 2};
  int32_t negative[1] = {-1};
  size_t i;

  EXPECT_OK(titans_session_forward(s, kPrompt, 8, logits, 8 * V));
  CHECK(Position(s) == 8);
  memcpy(first, logits, sizeof(float) * 8 * V);
  for (i = 0; i < 8 * V; ++i) {
    if (!isfinite(logits[i])) break;
  }
  CHECK(i == 8 * V);
  /* Streaming in pieces gives the logits of one call. */
  EXPECT_OK(titans_session_forward(pieces, kPrompt, 3, piece_logits, 3 * V));
  EXPECT_OK(titans_session_forward(pieces, kPrompt + 3, 5, piece_logits + 3 * V, 5 * V + 100));
  CHECK(Close(piece_logits, logits, 8 * V));

  /* Error paths: nothing changes. */
  EXPECT_STATUS(TITANS_INVALID_ARGUMENT, titans_session_forward(s, kPrompt, 8, logits, 8 * V - 1));
  EXPECT_STATUS(TITANS_INVALID_ARGUMENT, titans_session_forward(s, bad, 3, logits, 3 * V));
  CHECK(Contains(titans_last_error(), "outside the vocabulary"));
  EXPECT_STATUS(TITANS_INVALID_ARGUMENT, titans_session_forward(s, negative, 1, logits, V));
  EXPECT_STATUS(TITANS_INVALID_ARGUMENT, titans_session_forward(s, NULL, 2, logits, 2 * V));
  EXPECT_STATUS(TITANS_INVALID_ARGUMENT, titans_session_forward(s, kPrompt, 2, NULL, 2 * V));
  EXPECT_STATUS(TITANS_INVALID_ARGUMENT, titans_session_forward(NULL, kPrompt, 2, logits, 2 * V));
  EXPECT_STATUS(TITANS_INVALID_ARGUMENT,
                titans_session_forward(s, kPrompt, SIZE_MAX / 2, logits, SIZE_MAX));
  EXPECT_STATUS(TITANS_INVALID_ARGUMENT, titans_session_forward(e, kPrompt, 1, logits, V));
  CHECK(Position(s) == 8 && Position(e) == 0);
  EXPECT_OK(titans_session_forward(s, NULL, 0, NULL, 0)); /* n = 0: nothing */
  CHECK(Position(s) == 8);

  /* Reset: back to a fresh session's outputs. */
  EXPECT_OK(titans_session_reset(s));
  CHECK(Position(s) == 0);
  EXPECT_OK(titans_session_forward(s, kPrompt, 8, logits, 8 * V));
  CHECK(Equal(logits, first, 8 * V));

  /* Embeddings -> hidden states, on a token model and on an embeddings model. */
  for (i = 0; i < 3 * D; ++i) embeddings[i] = (float)((int)(i % 7) - 3) * 0.25f;
  EXPECT_OK(titans_session_forward_embeddings(s, embeddings, 3, hidden, 3 * D));
  CHECK(Position(s) == 11);
  EXPECT_OK(titans_session_forward_embeddings(e, embeddings, 3, hidden, 3 * D));
  CHECK(Position(e) == 3);
  EXPECT_OK(titans_session_reset(e));
  EXPECT_OK(titans_session_forward_embeddings(e, embeddings, 1, hidden2, D));
  EXPECT_OK(titans_session_forward_embeddings(e, embeddings + D, 2, hidden2 + D, 2 * D + 7));
  CHECK(Close(hidden2, hidden, 3 * D));
  EXPECT_STATUS(TITANS_INVALID_ARGUMENT,
                titans_session_forward_embeddings(e, embeddings, 3, hidden, 3 * D - 1));
  EXPECT_STATUS(TITANS_INVALID_ARGUMENT,
                titans_session_forward_embeddings(e, NULL, 3, hidden, 3 * D));
  EXPECT_STATUS(TITANS_INVALID_ARGUMENT,
                titans_session_forward_embeddings(e, embeddings, 3, NULL, 3 * D));
  EXPECT_STATUS(TITANS_INVALID_ARGUMENT,
                titans_session_forward_embeddings(NULL, embeddings, 3, hidden, 3 * D));
  embeddings[D + 5] = NAN;
  EXPECT_STATUS(TITANS_INVALID_ARGUMENT,
                titans_session_forward_embeddings(e, embeddings, 3, hidden, 3 * D));
  CHECK(Contains(titans_last_error(), "not finite"));
  embeddings[D + 5] = INFINITY;
  EXPECT_STATUS(TITANS_INVALID_ARGUMENT,
                titans_session_forward_embeddings(e, embeddings, 3, hidden, 3 * D));
  CHECK(Position(e) == 3);
  EXPECT_OK(titans_session_forward_embeddings(e, NULL, 0, NULL, 0));

  free(logits);
  free(piece_logits);
  free(first);
  titans_session_free(s);
  titans_session_free(pieces);
  titans_session_free(e);
}

static void TestClone(const titans_model* a) {
  titans_session* s = NewSession(a);
  titans_session* c = NULL;
  float* logits = (float*)malloc(sizeof(float) * 8 * V);
  float clone_logits[5 * V], source_logits[5 * V], other[V];

  EXPECT_OK(titans_session_forward(s, kPrompt, 8, logits, 8 * V));
  EXPECT_OK(titans_session_clone(s, &c));
  CHECK(c != NULL && Position(c) == 8);
  /* The clone runs on alone: the source does not move ... */
  EXPECT_OK(titans_session_forward(c, kMore, 5, clone_logits, 5 * V));
  CHECK(Position(c) == 13 && Position(s) == 8);
  /* ... and gives the same outputs afterwards as the clone did. */
  EXPECT_OK(titans_session_forward(s, kMore, 5, source_logits, 5 * V));
  CHECK(Equal(source_logits, clone_logits, 5 * V));
  /* Changing the clone does not change the source. */
  EXPECT_OK(titans_session_reset(c));
  CHECK(Position(c) == 0 && Position(s) == 13);
  EXPECT_OK(titans_session_forward(c, kPrompt, 1, other, V));
  CHECK(Close(other, logits, V));
  titans_session_free(c);
  free(logits);
  titans_session_free(s);
}

static void TestSampler(void) {
  titans_sampler_params params = titans_sampler_default_params();
  titans_sampler_params bad;
  titans_sampler* greedy = NULL;
  titans_sampler* a = NULL;
  titans_sampler* b = NULL;
  titans_sampler* none = NULL;
  float logits[6] = {0.1f, 2.0f, -1.0f, 3.5f, 0.0f, 3.4f};
  float broken[6] = {0.1f, 2.0f, NAN, 3.5f, 0.0f, 3.4f};
  int32_t token = -7, ta, tb;
  int k;

  CHECK(params.temperature == 0.0f && params.top_k == 0 && params.top_p == 1.0f &&
        params.seed == 0);
  EXPECT_OK(titans_sampler_new(&params, &greedy));
  EXPECT_OK(titans_sampler_sample(greedy, logits, 6, &token));
  CHECK(token == 3);

  bad = params;
  bad.temperature = -1.0f;
  EXPECT_STATUS(TITANS_INVALID_ARGUMENT, titans_sampler_new(&bad, &none));
  bad = params;
  bad.temperature = NAN;
  EXPECT_STATUS(TITANS_INVALID_ARGUMENT, titans_sampler_new(&bad, &none));
  bad = params;
  bad.top_p = 0.0f;
  EXPECT_STATUS(TITANS_INVALID_ARGUMENT, titans_sampler_new(&bad, &none));
  bad.top_p = 1.5f;
  EXPECT_STATUS(TITANS_INVALID_ARGUMENT, titans_sampler_new(&bad, &none));
  bad = params;
  bad.top_k = -1;
  EXPECT_STATUS(TITANS_INVALID_ARGUMENT, titans_sampler_new(&bad, &none));
  EXPECT_STATUS(TITANS_INVALID_ARGUMENT, titans_sampler_new(NULL, &none));
  EXPECT_STATUS(TITANS_INVALID_ARGUMENT, titans_sampler_new(&params, NULL));
  CHECK(none == NULL);

  EXPECT_STATUS(TITANS_INVALID_ARGUMENT, titans_sampler_sample(greedy, logits, 0, &token));
  EXPECT_STATUS(TITANS_INVALID_ARGUMENT, titans_sampler_sample(greedy, NULL, 6, &token));
  EXPECT_STATUS(TITANS_INVALID_ARGUMENT, titans_sampler_sample(greedy, logits, 6, NULL));
  EXPECT_STATUS(TITANS_INVALID_ARGUMENT, titans_sampler_sample(NULL, logits, 6, &token));
  CHECK(token == 3);

  /* Two samplers of one seed draw the same stream; a failed draw does not advance it. */
  params.temperature = 1.5f;
  params.top_k = 5;
  params.top_p = 0.95f;
  params.seed = 42;
  EXPECT_OK(titans_sampler_new(&params, &a));
  EXPECT_OK(titans_sampler_new(&params, &b));
  EXPECT_STATUS(TITANS_INVALID_ARGUMENT, titans_sampler_sample(b, broken, 6, &tb));
  for (k = 0; k < 20; ++k) {
    EXPECT_OK(titans_sampler_sample(a, logits, 6, &ta));
    EXPECT_OK(titans_sampler_sample(b, logits, 6, &tb));
    CHECK(ta == tb && ta >= 0 && ta < 6 && ta != 2); /* top_k 5 drops the least likely */
  }
  titans_sampler_free(greedy);
  titans_sampler_free(a);
  titans_sampler_free(b);
  titans_sampler_free(NULL);
}

typedef struct Collected {
  int32_t tokens[64];
  int count;
  int stop_at; /* return nonzero on this token (1-based); 0: never */
} Collected;

static int Collect(int32_t token, void* user_data) {
  Collected* c = (Collected*)user_data;
  if (c->count < 64) c->tokens[c->count] = token;
  ++c->count;
  return c->stop_at != 0 && c->count >= c->stop_at;
}

static void TestGenerate(const titans_model* a, const titans_model* emb) {
  titans_sampler_params params = titans_sampler_default_params();
  titans_session* s = NewSession(a);
  titans_session* manual = NewSession(a);
  titans_session* e = NewSession(emb);
  titans_sampler* sampler = NULL;
  Collected all, early, greedy;
  float* logits = (float*)malloc(sizeof(float) * 8 * V);
  float step[V], after_generate[V], after_manual[V];
  int32_t n = -1, bad_prompt[2] = {3, 999};
  int i;

  params.temperature = 0.8f;
  params.top_k = 40;
  params.seed = 3;
  memset(&all, 0, sizeof all);
  EXPECT_OK(titans_session_generate(s, kPrompt, 8, 10, &params, Collect, &all, &n));
  CHECK(n == 10 && all.count == 10);
  CHECK(Position(s) == 8 + 9); /* the last token is not fed */

  /* The same by hand: forward, sample, feed back. */
  EXPECT_OK(titans_sampler_new(&params, &sampler));
  EXPECT_OK(titans_session_forward(manual, kPrompt, 8, logits, 8 * V));
  for (i = 0; i < 10; ++i) {
    int32_t token = -1;
    EXPECT_OK(titans_sampler_sample(sampler, i == 0 ? logits + 7 * V : step, V, &token));
    CHECK(token == all.tokens[i]);
    if (i + 1 < 10) EXPECT_OK(titans_session_forward(manual, &token, 1, step, V));
  }
  titans_sampler_free(sampler);
  CHECK(Position(manual) == Position(s));
  EXPECT_OK(titans_session_forward(s, kMore, 1, after_generate, V));
  EXPECT_OK(titans_session_forward(manual, kMore, 1, after_manual, V));
  CHECK(Equal(after_generate, after_manual, V));

  /* A callback that stops early: as if max_new_tokens had been the tokens delivered. */
  EXPECT_OK(titans_session_reset(s));
  memset(&early, 0, sizeof early);
  early.stop_at = 3;
  EXPECT_OK(titans_session_generate(s, kPrompt, 8, 10, &params, Collect, &early, &n));
  CHECK(n == 3 && early.count == 3);
  CHECK(memcmp(early.tokens, all.tokens, 3 * sizeof(int32_t)) == 0);
  CHECK(Position(s) == 8 + 2);

  /* NULL params: greedy; max_new_tokens 0 feeds the prompt only. */
  EXPECT_OK(titans_session_reset(s));
  memset(&greedy, 0, sizeof greedy);
  EXPECT_OK(titans_session_generate(s, kPrompt, 8, 4, NULL, Collect, &greedy, NULL));
  CHECK(greedy.count == 4);
  EXPECT_OK(titans_session_reset(s));
  memset(&greedy, 0, sizeof greedy);
  EXPECT_OK(titans_session_generate(s, kPrompt, 8, 0, &params, Collect, &greedy, &n));
  CHECK(n == 0 && greedy.count == 0 && Position(s) == 8);

  /* Errors: checked before anything runs; the session and *n_generated stay as they were. */
  n = 1234;
  memset(&greedy, 0, sizeof greedy);
  EXPECT_STATUS(TITANS_INVALID_ARGUMENT,
                titans_session_generate(s, kPrompt, 8, 4, &params, NULL, NULL, &n));
  EXPECT_STATUS(TITANS_INVALID_ARGUMENT,
                titans_session_generate(s, kPrompt, 8, -1, &params, Collect, &greedy, &n));
  EXPECT_STATUS(TITANS_INVALID_ARGUMENT,
                titans_session_generate(s, NULL, 0, 4, &params, Collect, &greedy, &n));
  EXPECT_STATUS(TITANS_INVALID_ARGUMENT,
                titans_session_generate(s, NULL, 3, 4, &params, Collect, &greedy, &n));
  EXPECT_STATUS(TITANS_INVALID_ARGUMENT,
                titans_session_generate(s, bad_prompt, 2, 4, &params, Collect, &greedy, &n));
  EXPECT_STATUS(TITANS_INVALID_ARGUMENT,
                titans_session_generate(NULL, kPrompt, 8, 4, &params, Collect, &greedy, &n));
  EXPECT_STATUS(TITANS_INVALID_ARGUMENT,
                titans_session_generate(e, kPrompt, 8, 4, &params, Collect, &greedy, &n));
  params.top_p = 2.0f;
  EXPECT_STATUS(TITANS_INVALID_ARGUMENT,
                titans_session_generate(s, kPrompt, 8, 4, &params, Collect, &greedy, &n));
  CHECK(n == 1234 && greedy.count == 0 && Position(s) == 8);

  free(logits);
  titans_session_free(s);
  titans_session_free(manual);
  titans_session_free(e);
}

static void TestState(const titans_model* a, const titans_model* b) {
  titans_session* s = NewSession(a);
  titans_session* straight = NewSession(a);
  titans_session* from_file = NewSession(a);
  titans_session* from_buffer = NewSession(a);
  titans_session* other = NewSession(b);
  float* logits = (float*)malloc(sizeof(float) * 8 * V);
  float expected[5 * V], got[5 * V];
  size_t size = 0, written = 999, file_size = 0, other_size = 0;
  unsigned char *buffer, *file_bytes, *other_bytes;
  static const char garbage[] = "not a session state";

  /* Forward after load equals forward without stopping. */
  EXPECT_OK(titans_session_forward(straight, kPrompt, 8, logits, 8 * V));
  EXPECT_OK(titans_session_forward(straight, kMore, 5, expected, 5 * V));
  EXPECT_OK(titans_session_forward(s, kPrompt, 8, logits, 8 * V));
  EXPECT_OK(titans_session_save(s, Path("a.state")));
  EXPECT_OK(titans_session_load(from_file, Path("a.state")));
  CHECK(Position(from_file) == 8);
  EXPECT_OK(titans_session_forward(from_file, kMore, 5, got, 5 * V));
  CHECK(Equal(got, expected, 5 * V));

  /* The same through a caller-owned buffer, whose bytes are the file's. */
  EXPECT_OK(titans_session_state_size(s, &size));
  CHECK(size > 8);
  buffer = (unsigned char*)malloc(size);
  EXPECT_STATUS(TITANS_INVALID_ARGUMENT, titans_session_state_get(s, buffer, size - 1, &written));
  CHECK(written == 999);
  EXPECT_STATUS(TITANS_INVALID_ARGUMENT, titans_session_state_get(s, NULL, size, &written));
  EXPECT_STATUS(TITANS_INVALID_ARGUMENT, titans_session_state_get(NULL, buffer, size, &written));
  EXPECT_STATUS(TITANS_INVALID_ARGUMENT, titans_session_state_size(NULL, &size));
  EXPECT_STATUS(TITANS_INVALID_ARGUMENT, titans_session_state_size(s, NULL));
  EXPECT_OK(titans_session_state_get(s, buffer, size, &written));
  CHECK(written == size);
  file_bytes = ReadFile(Path("a.state"), &file_size);
  CHECK(file_bytes != NULL && file_size == size && memcmp(file_bytes, buffer, size) == 0);
  EXPECT_OK(titans_session_state_set(from_buffer, buffer, size));
  CHECK(Position(from_buffer) == 8);
  EXPECT_OK(titans_session_forward(from_buffer, kMore, 5, got, 5 * V));
  CHECK(Equal(got, expected, 5 * V));
  /* written may be NULL; a larger buffer is fine. */
  free(buffer);
  buffer = (unsigned char*)malloc(size + 16);
  EXPECT_OK(titans_session_state_get(s, buffer, size + 16, NULL));
  CHECK(memcmp(file_bytes, buffer, size) == 0);

  /* File errors: the session stays as it was. */
  EXPECT_STATUS(TITANS_INVALID_ARGUMENT, titans_session_save(s, NULL));
  EXPECT_STATUS(TITANS_INVALID_ARGUMENT, titans_session_save(NULL, Path("x.state")));
  EXPECT_STATUS(TITANS_IO, titans_session_save(s, Path("no_such_dir/x.state")));
  EXPECT_STATUS(TITANS_INVALID_ARGUMENT, titans_session_load(s, NULL));
  EXPECT_STATUS(TITANS_INVALID_ARGUMENT, titans_session_load(NULL, Path("a.state")));
  EXPECT_STATUS(TITANS_IO, titans_session_load(s, Path("no_such.state")));
  WriteFile(Path("garbage.state"), garbage, sizeof garbage);
  EXPECT_STATUS(TITANS_FORMAT, titans_session_load(s, Path("garbage.state")));
  WriteFile(Path("truncated.state"), buffer, size / 2);
  EXPECT_STATUS(TITANS_FORMAT, titans_session_load(s, Path("truncated.state")));
  EXPECT_STATUS(TITANS_FORMAT, titans_session_load(s, model_a_path)); /* a model, not a state */
  CHECK(Position(s) == 8);

  /* Another model's state: mismatch, by file and by buffer. */
  EXPECT_OK(titans_session_forward(other, kPrompt, 2, logits, 2 * V));
  EXPECT_OK(titans_session_save(other, Path("b.state")));
  EXPECT_STATUS(TITANS_MISMATCH, titans_session_load(s, Path("b.state")));
  CHECK(Contains(titans_last_error(), "another model config"));
  EXPECT_OK(titans_session_state_size(other, &other_size));
  other_bytes = (unsigned char*)malloc(other_size);
  EXPECT_OK(titans_session_state_get(other, other_bytes, other_size, NULL));
  EXPECT_STATUS(TITANS_MISMATCH, titans_session_state_set(s, other_bytes, other_size));
  CHECK(Position(s) == 8);

  /* Buffer errors. */
  EXPECT_STATUS(TITANS_FORMAT, titans_session_state_set(s, buffer, size / 2));
  EXPECT_STATUS(TITANS_FORMAT, titans_session_state_set(s, buffer, size - 1));
  EXPECT_STATUS(TITANS_FORMAT, titans_session_state_set(s, garbage, sizeof garbage));
  EXPECT_STATUS(TITANS_FORMAT, titans_session_state_set(s, NULL, 0));
  EXPECT_STATUS(TITANS_INVALID_ARGUMENT, titans_session_state_set(s, NULL, 10));
  EXPECT_STATUS(TITANS_INVALID_ARGUMENT, titans_session_state_set(NULL, buffer, size));
  buffer[12] ^= 0x55; /* inside the JSON header */
  EXPECT_STATUS(TITANS_FORMAT, titans_session_state_set(s, buffer, size));
  buffer[12] ^= 0x55;
  CHECK(Position(s) == 8);
  EXPECT_OK(titans_session_forward(s, kMore, 5, got, 5 * V));
  CHECK(Equal(got, expected, 5 * V));

  free(buffer);
  free(file_bytes);
  free(other_bytes);
  free(logits);
  titans_session_free(s);
  titans_session_free(straight);
  titans_session_free(from_file);
  titans_session_free(from_buffer);
  titans_session_free(other);
}

/* Overwrites the F32 tensor `name` of a state buffer with `value` (the header is compact JSON:
 * "name":{"dtype":"F32","shape":[...],"data_offsets":[begin,end]}). 0 if not found. */
static int Overwrite(unsigned char* state, size_t size, const char* name, float value) {
  uint64_t header = 0;
  char quoted[256];
  const char* entry;
  const char* offsets;
  unsigned long long begin, end, k;
  char* text;
  memcpy(&header, state, 8);
  if (header + 8 > size) return 0;
  text = (char*)malloc((size_t)header + 1);
  memcpy(text, state + 8, (size_t)header);
  text[header] = '\0';
  snprintf(quoted, sizeof quoted, "\"%s\":", name);
  entry = strstr(text, quoted);
  offsets = entry ? strstr(entry, "\"data_offsets\":[") : NULL;
  if (offsets == NULL ||
      sscanf(offsets + strlen("\"data_offsets\":["), "%llu,%llu", &begin, &end) != 2) {
    free(text);
    return 0;
  }
  free(text);
  for (k = begin; k + 4 <= end; k += 4) memcpy(state + 8 + header + k, &value, 4);
  return end > begin;
}

static void TestNumerical(const titans_model* a) {
  titans_session* s = NewSession(a);
  titans_session* c = NULL;
  float* logits = (float*)malloc(sizeof(float) * 256 * V);
  int32_t tokens[256];
  size_t size = 0;
  unsigned char* state;
  Collected none;
  int i;

  EXPECT_OK(titans_session_forward(s, kPrompt, 8, logits, 8 * V));
  EXPECT_OK(titans_session_state_size(s, &size));
  state = (unsigned char*)malloc(size);
  EXPECT_OK(titans_session_state_get(s, state, size, NULL));
  CHECK(Overwrite(state, size, "layers.0.memory.w_cur.0", 3e37f));
  CHECK(Overwrite(state, size, "layers.0.memory.w_base.0", 3e37f));
  EXPECT_OK(titans_session_state_set(s, state, size)); /* huge but finite: accepted */
  /* Enough tokens for the memory to write (a whole chunk): its update overflows. */
  for (i = 0; i < 256; ++i) tokens[i] = (i * 37) % V;
  EXPECT_STATUS(TITANS_NUMERICAL, titans_session_forward(s, tokens, 256, logits, 256 * V));
  CHECK(Contains(titans_last_error(), "titans_session_forward: numerical"));
  /* Broken until reset or load: forward, clone, save, state_get and generate refuse. */
  EXPECT_STATUS(TITANS_NUMERICAL, titans_session_forward(s, kMore, 1, logits, V));
  EXPECT_STATUS(TITANS_NUMERICAL, titans_session_clone(s, &c));
  CHECK(c == NULL);
  EXPECT_STATUS(TITANS_NUMERICAL, titans_session_save(s, Path("broken.state")));
  EXPECT_STATUS(TITANS_NUMERICAL, titans_session_state_size(s, &size));
  memset(&none, 0, sizeof none);
  EXPECT_STATUS(TITANS_NUMERICAL,
                titans_session_generate(s, kPrompt, 2, 2, NULL, Collect, &none, NULL));
  CHECK(none.count == 0);
  EXPECT_OK(titans_session_reset(s));
  EXPECT_OK(titans_session_forward(s, kPrompt, 8, logits, 8 * V));
  free(state);
  free(logits);
  titans_session_free(s);
}

static void TestHealth(const titans_model* a, const titans_model* b) {
  titans_session* s = NewSession(a);
  float* logits = (float*)malloc(sizeof(float) * 8 * V);
  titans_memory_health health[4];
  size_t count = 99;
  size_t i;
  (void)b;

  EXPECT_OK(titans_session_forward(s, kPrompt, 8, logits, 8 * V));
  EXPECT_OK(titans_session_health(s, NULL, 0, &count));
  CHECK(count == 2); /* mag: every layer has a memory */
  EXPECT_STATUS(TITANS_INVALID_ARGUMENT, titans_session_health(s, health, 1, &count));
  EXPECT_STATUS(TITANS_INVALID_ARGUMENT, titans_session_health(s, NULL, 4, &count));
  EXPECT_STATUS(TITANS_INVALID_ARGUMENT, titans_session_health(s, health, 4, NULL));
  EXPECT_STATUS(TITANS_INVALID_ARGUMENT, titans_session_health(NULL, health, 4, &count));
  CHECK(count == 2);
  count = 0;
  EXPECT_OK(titans_session_health(s, health, 4, &count));
  CHECK(count == 2);
  for (i = 0; i < count && i < 4; ++i) {
    CHECK(health[i].layer == (int32_t)i);
    CHECK(health[i].finite == 1 && health[i].all_zero == 0);
    CHECK(health[i].position == 8);
    CHECK(health[i].weights_norm > 0 && health[i].initial_norm > 0);
  }
  free(logits);
  titans_session_free(s);
}

/* The last error is per thread: a failure on another thread does not touch this one's. */
static void* FailOnThread(void* arg) {
  titans_model* m = NULL;
  int* ok = (int*)arg;
  *ok = strcmp(titans_last_error(), "") == 0 &&
        titans_model_load(Path("missing_on_thread.safetensors"), &m) == TITANS_IO &&
        Contains(titans_last_error(), "missing_on_thread");
  return NULL;
}

static void TestErrorsPerThread(const titans_model* a) {
  pthread_t thread;
  int ok = 0;
  int32_t value;
  titans_model* m = NULL;
  EXPECT_STATUS(TITANS_IO, titans_model_load(Path("missing_on_main.safetensors"), &m));
  CHECK(pthread_create(&thread, NULL, FailOnThread, &ok) == 0);
  CHECK(pthread_join(thread, NULL) == 0);
  CHECK(ok);
  CHECK(Contains(titans_last_error(), "missing_on_main"));
  EXPECT_OK(titans_model_vocab_size(a, &value)); /* success leaves the message */
  CHECK(Contains(titans_last_error(), "missing_on_main"));
}

int main(int argc, char** argv) {
  titans_model* a = NULL;
  titans_model* b = NULL;
  titans_model* emb = NULL;
  titans_session* keeps_model = NULL;
  float logits[V];

  if (argc != 5) {
    fprintf(stderr, "usage: c_api_test MODEL_A MODEL_B MODEL_EMB SCRATCH_DIR\n");
    return 2;
  }
  model_a_path = argv[1];
  model_b_path = argv[2];
  model_emb_path = argv[3];
  scratch = argv[4];

  TestVersionAndStatus();
  TestModelLoadErrors();
  EXPECT_OK(titans_model_load(model_a_path, &a));
  EXPECT_OK(titans_model_load(model_b_path, &b));
  EXPECT_OK(titans_model_load(model_emb_path, &emb));
  if (a == NULL || b == NULL || emb == NULL) {
    fprintf(stderr, "cannot load the test models: %s\n", titans_last_error());
    return 1;
  }
  TestModelInfo(a, emb);
  TestWeightType(a);
  TestSessionLifecycle(a);
  TestForward(a, emb);
  TestClone(a);
  TestSampler();
  TestGenerate(a, emb);
  TestState(a, b);
  TestNumerical(a);
  TestHealth(a, b);
  TestErrorsPerThread(a);

  /* A session keeps its model alive after the model's handle is freed. */
  keeps_model = NewSession(b);
  titans_model_free(b);
  EXPECT_OK(titans_session_forward(keeps_model, kPrompt, 1, logits, V));
  titans_session_free(keeps_model);

  titans_model_free(a);
  titans_model_free(emb);
  printf("c_api_test: %d checks, %d failed\n", checks, failures);
  return failures == 0 ? 0 : 1;
}
