#include "client/engram_spec.h"

#include <gtest/gtest.h>

namespace engram::client {
namespace {

constexpr const char* kDemo = R"({"engram_vocab_size":[646400,646400],"max_ngram_size":3,
  "n_embed_per_ngram":512,"n_head_per_ngram":8,"layer_ids":[1,15],"pad_id":2,"seed":0,
  "compressed_vocab_size":128000,"tokenizer_name_or_path":"ignored"})";

TEST(EngramSpecTest, ParsesTheReferenceFieldNames) {
  auto s = EngramSpec::FromJson(kDemo);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(s->max_ngram_size, 3);
  EXPECT_EQ(s->layer_ids, (std::vector<int64_t>{1, 15}));
  EXPECT_EQ(s->head_dim(), 64);
  EXPECT_EQ(s->lookups_per_token(), 16);
}

void ExpectInvalid(const std::string& json, const std::string& mentions) {
  auto s = EngramSpec::FromJson(json);
  ASSERT_FALSE(s.ok()) << json;
  EXPECT_TRUE(s.status().IsInvalidArgument());
  EXPECT_NE(s.status().message().find(mentions), std::string::npos) << s.status().message();
}

TEST(EngramSpecTest, ImpossibleSpecsGetErrorsNamingTheField) {
  ExpectInvalid("not json", "JSON");
  ExpectInvalid("[1,2]", "object");
  ExpectInvalid(R"({"max_ngram_size":3})", "engram_vocab_size");
  ExpectInvalid(R"({"engram_vocab_size":[10],"max_ngram_size":3,"n_embed_per_ngram":8,"n_head_per_ngram":2,
    "layer_ids":[1],"pad_id":0,"compressed_vocab_size":5})", "max_ngram_size - 1");
  ExpectInvalid(R"({"engram_vocab_size":[10,10],"max_ngram_size":3,"n_embed_per_ngram":9,"n_head_per_ngram":2,
    "layer_ids":[1],"pad_id":0,"compressed_vocab_size":5})", "n_embed_per_ngram");
  ExpectInvalid(R"({"engram_vocab_size":[10,10],"max_ngram_size":3,"n_embed_per_ngram":8,"n_head_per_ngram":2,
    "layer_ids":[1,1],"pad_id":0,"compressed_vocab_size":5})", "distinct");
  ExpectInvalid(R"({"engram_vocab_size":[10,10],"max_ngram_size":3,"n_embed_per_ngram":8,"n_head_per_ngram":2,
    "layer_ids":[1],"pad_id":0,"compressed_vocab_size":0})", "compressed_vocab_size");
  ExpectInvalid(R"({"engram_vocab_size":[10,10],"max_ngram_size":3,"n_embed_per_ngram":8,"n_head_per_ngram":2,
    "layer_ids":[1],"pad_id":0,"compressed_vocab_size":3,"compression":[0,1,5]})", "compression[2]");
  ExpectInvalid(R"({"engram_vocab_size":[10,10],"max_ngram_size":3,"n_embed_per_ngram":8,"n_head_per_ngram":2,
    "layer_ids":[1],"pad_id":9,"compressed_vocab_size":3,"compression":[0,1,2]})", "pad_id");
  ExpectInvalid(R"({"engram_vocab_size":[10,10],"max_ngram_size":3,"n_embed_per_ngram":8,"n_head_per_ngram":2,
    "layer_ids":[1],"pad_id":0,"compressed_vocab_size":3,"multipliers":{"2":[1,3,5]}})", "layer 2");
  ExpectInvalid(R"({"engram_vocab_size":"big","max_ngram_size":3})", "wrong type");
  ExpectInvalid(R"({"engram_vocab_size":[10,10],"max_ngram_size":3,"n_embed_per_ngram":8,"n_head_per_ngram":2,
    "layer_ids":[1],"pad_id":0,"compressed_vocab_size":3,"seed":-1})", "seed");
}

TEST(EngramSpecTest, MissingFileIsNotFound) {
  auto s = EngramSpec::FromFile("/nonexistent/spec.json");
  EXPECT_TRUE(s.status().IsNotFound());
}

}  // namespace
}  // namespace engram::client
