// A Session over a titans-pytorch MemoryAsContextTransformer model (architecture
// kTitansPytorchMac; internal). Session dispatches here; src/tp_mac_session.cpp says what is
// computed. The state is the ordinary Session::State (per layer a MemorySession and an
// AttentionCache, the token position); this is the scratch.
#pragma once

#include <cstdint>
#include <vector>

#include "attention.hpp"
#include "linalg.hpp"
#include "session_state.hpp"
#include "titans/model.hpp"
#include "titans/session.hpp"

namespace titans {

// Scratch for one piece of at most kRows interspersed rows, sized once per session. S = streams,
// Ha*da = attention width, f = ffn_hidden, C = tp_mac.memory_segment.
struct Session::TpMacWorkspace {
  static constexpr int kRows = 64;

  TpMacWorkspace(const Model& model, int threads);

  AttentionWorkspace attention;
  RowMatrix x;                  // [P, d] a piece's inputs: token or long-term embedding + position
  RowMatrix streams;            // [P*S, d] residual streams, row i*S + s
  RowMatrix normed;             // [P*S, d] the hyper-connection's normalised streams
  RowMatrix dynamic;            // [P*S, 1+S] normed streams times dynamic_alpha
  RowMatrix mixed;              // [P*S, d] streams mixed by the Sinkhorn matrix
  std::vector<float> beta;      // [P*S] weight of the branch output in each stream
  std::vector<float> sinkhorn;  // [S, S]
  RowMatrix branch;             // [P, d] a branch's input
  RowMatrix out;                // [P, d] a branch's output
  RowMatrix gate;               // [P, d] sigmoid(memory output) gating the attention output
  RowMatrix xn;                 // [P, d] normalised branch input
  RowMatrix q, k, v, att, v_first;  // [P, Ha*da]; v_first: the first layer's values
  RowMatrix mix;                    // [P, Ha] value residual mix
  RowMatrix ffn_a, ffn_b;           // [P, f]
  RowMatrix axial_inner;            // [C, d] MLP_1(j) for j = 0..C-1
  RowMatrix axial_outer;            // [1, d] MLP_0(axial_outer_index)
  int64_t axial_outer_index = -1;
  RowMatrix axial_h0, axial_h1;    // [1, 2d] the axial MLP's hidden rows
  std::vector<int64_t> row_token;  // [P] index of the call's token in row i; -1: long-term
};

namespace tp_mac {

// Runs n tokens through the model after the rows the session already ran: their inputs are
// tokens[i] (embedding rows) or, when tokens is null, embeddings [n, d]. Writes logits [n, V]
// when `logits` is given, else the hidden states after the final norm into hidden [n, d].
// Inputs are checked by the caller (Session::Forward / ForwardEmbeddings).
void Run(const Model& model, Session::State& state, Session::TpMacWorkspace& ws,
         const SessionOptions& options, const int32_t* tokens, const float* embeddings, int64_t n,
         float* logits, float* hidden);

}  // namespace tp_mac
}  // namespace titans
