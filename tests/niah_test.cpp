// Needle in a haystack (titans/evals/niah.hpp): the trial text is what docs/NIAH.md says, and
// the constructed model recalls the needle through its memory beyond the attention window, fails
// there with its memory's writes off, and recalls through attention alone when the attention
// sees everything.
#include "titans/evals/niah.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "titans/error.hpp"

namespace titans::niah {
namespace {

std::string Text(const TrialText& text, int64_t begin, int64_t end) {
  std::vector<int32_t> tokens(static_cast<size_t>(end - begin));
  text.Fill(begin, tokens);
  return DecodeBytes(tokens);
}

TEST(NiahText, BytesRoundTrip) {
  const std::string s = "caf\xc3\xa9 \x01\xff";
  const std::vector<int32_t> tokens = EncodeBytes(s);
  ASSERT_EQ(tokens.size(), s.size());
  EXPECT_EQ(tokens[3], 0xc3);
  EXPECT_EQ(tokens.back(), 0xff);
  EXPECT_EQ(DecodeBytes(tokens), s);
}

TEST(NiahText, LayoutOfTheContext) {
  const TrialText text(kNoiseBlock, {.length = 5000, .depth = 0.5, .seed = 3});
  ASSERT_EQ(text.size(), 5000);
  ASSERT_EQ(text.number().size(), static_cast<size_t>(kDigits));
  EXPECT_TRUE(std::all_of(text.number().begin(), text.number().end(), ::isdigit));
  EXPECT_EQ(text.needle(),
            "One of the special magic numbers for " + text.key() + " is: " + text.number() + ". ");
  EXPECT_EQ(text.question(), "What is the special magic number for " + text.key() +
                                 "? The special magic number for " + text.key() + " is: ");

  const std::string whole = Text(text, 0, text.size());
  // The needle once, at needle_position(), at a sentence start near the middle of the haystack.
  const auto at = static_cast<int64_t>(whole.find(text.needle()));
  EXPECT_EQ(at, text.needle_position());
  EXPECT_EQ(whole.find(text.needle(), static_cast<size_t>(at) + 1), std::string::npos);
  EXPECT_EQ(whole.substr(static_cast<size_t>(at) - 2, 2), ". ");
  const int64_t haystack =
      text.size() - static_cast<int64_t>(text.needle().size() + text.question().size());
  EXPECT_LE(at, haystack / 2);
  EXPECT_GT(at, haystack / 2 - static_cast<int64_t>(kNoiseBlock.size()));
  // The haystack is the block repeated, before and after the needle; the question ends it all.
  EXPECT_EQ(whole.substr(0, kNoiseBlock.size()), kNoiseBlock);
  const std::string after =
      whole.substr(static_cast<size_t>(at) + text.needle().size(), kNoiseBlock.size());
  EXPECT_NE(std::string(kNoiseBlock).append(kNoiseBlock).find(after), std::string::npos);
  EXPECT_TRUE(whole.ends_with(text.question()));

  // Pieces of any size give the same stream.
  std::string pieces;
  for (int64_t begin = 0; begin < text.size(); begin += 777) {
    pieces += Text(text, begin, std::min<int64_t>(text.size(), begin + 777));
  }
  EXPECT_EQ(pieces, whole);
}

TEST(NiahText, DepthsZeroAndOne) {
  const TrialText first(kNoiseBlock, {.length = 3000, .depth = 0.0, .seed = 1});
  EXPECT_EQ(first.needle_position(), 0);
  EXPECT_TRUE(Text(first, 0, first.size()).starts_with(first.needle()));

  const TrialText last(kNoiseBlock, {.length = 3000, .depth = 1.0, .seed = 1});
  const std::string whole = Text(last, 0, last.size());
  // At most a sentence of haystack between the needle and the question.
  const size_t gap = whole.size() - last.question().size() -
                     (static_cast<size_t>(last.needle_position()) + last.needle().size());
  EXPECT_LT(gap, kNoiseBlock.size());
}

TEST(NiahText, SeedsPickDifferentNeedles) {
  const TrialText a(kNoiseBlock, {.length = 1000, .depth = 0.5, .seed = 1});
  const TrialText b(kNoiseBlock, {.length = 1000, .depth = 0.5, .seed = 2});
  const TrialText a_again(kNoiseBlock, {.length = 1000, .depth = 0.5, .seed = 1});
  EXPECT_NE(a.number(), b.number());
  EXPECT_EQ(a.number(), a_again.number());
  EXPECT_EQ(a.key(), a_again.key());
}

TEST(NiahText, BadInput) {
  EXPECT_THROW(TrialText("", {.length = 1000, .depth = 0.5}), Error);
  EXPECT_THROW(TrialText(kNoiseBlock, {.length = 1000, .depth = 1.5}), Error);
  EXPECT_THROW(TrialText(kNoiseBlock, {.length = 1000, .depth = -0.1}), Error);
  EXPECT_THROW(TrialText(kNoiseBlock, {.length = 50, .depth = 0.5}), Error);
  EXPECT_THROW(BuildNeedleModel({.window = 0}), Error);
  EXPECT_THROW(BuildNeedleModel({.window = 4096}), Error);
}

// The constructed model, beyond and within its attention window of 256 tokens.
class NiahModel : public ::testing::Test {
 protected:
  static int CorrectTrials(const std::shared_ptr<const Model>& model, int64_t length, double depth,
                           int trials) {
    Session session(model, SessionOptions{.threads = 1});
    int correct = 0;
    for (int t = 0; t < trials; ++t) {
      const TrialResult r = RunTrial(session, kNoiseBlock, {length, depth, 100 + uint64_t(t)});
      EXPECT_EQ(r.expected.size(), static_cast<size_t>(kDigits));
      EXPECT_EQ(r.answer.size(), static_cast<size_t>(kDigits));
      correct += r.correct ? 1 : 0;
    }
    return correct;
  }
};

TEST_F(NiahModel, MemoryRecallsBeyondTheWindow) {
  const auto model = BuildNeedleModel();
  for (double depth : {0.0, 0.5, 0.9}) {
    EXPECT_EQ(CorrectTrials(model, 6000, depth, 3), 3) << "depth " << depth;
  }
}

TEST_F(NiahModel, WritesOffRecallsOnlyWithinTheWindow) {
  const auto model = WithoutMemoryWrites(*BuildNeedleModel());
  EXPECT_EQ(model->config().memory.max_lr, 0.0f);
  EXPECT_EQ(CorrectTrials(model, 6000, 0.0, 3), 0);
  EXPECT_EQ(CorrectTrials(model, 6000, 0.5, 3), 0);
  // Needle last: it is within the 256-token window when the question is asked.
  EXPECT_EQ(CorrectTrials(model, 6000, 1.0, 3), 3);
}

TEST_F(NiahModel, FullAttentionRecallsWithoutMemory) {
  const auto model = BuildNeedleModel({.full_attention = true});
  EXPECT_EQ(model->config().attention.window, 0);
  EXPECT_EQ(CorrectTrials(model, 6000, 0.0, 2), 2);
  EXPECT_EQ(CorrectTrials(model, 6000, 0.5, 2), 2);
}

TEST_F(NiahModel, AnswerDoesNotDependOnThePieceSize) {
  const auto model = BuildNeedleModel();
  Session session(model, SessionOptions{.threads = 1});
  const TrialSpec spec{3000, 0.3, 7};
  const TrialResult whole = RunTrial(session, kNoiseBlock, spec, {}, 4096);
  const TrialResult pieces = RunTrial(session, kNoiseBlock, spec, {}, 61);
  EXPECT_TRUE(whole.correct);
  EXPECT_EQ(whole.answer, pieces.answer);
}

}  // namespace
}  // namespace titans::niah
