// Files of a saved policy, both GGUF and both written atomically (temporary file, fsync, rename):
//   adapter.gguf    the LoRA adapter exactly as llama.cpp loads it (`--lora`): general.type
//                   "adapter", adapter.type "lora", adapter.lora.alpha, tensors
//                   "blk.N.<module>.weight.lora_a" / ".lora_b"; plus visplay.* keys (rank,
//                   targets, step, a fingerprint of the base model) that llama.cpp ignores;
//   optimizer.gguf  AdamW moments per tensor ("<name>.m", "<name>.v"), step, skipped steps, the
//                   RNG state and the optimizer settings, with the same fingerprint and step.
#pragma once

#include "lm_graph.h"
#include "policy.h"

#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

struct llama_adapter_lora;
struct gguf_context;

namespace visplay {

inline constexpr const char * kAdapterFile = "adapter.gguf";
inline constexpr const char * kOptimizerFile = "optimizer.gguf";
// The projector adapter (PolicyOptions::projector_rank > 0) is kept out of adapter.gguf, which
// llama.cpp must load as a language-model LoRA: its tensors "projector.lora_a" / ".lora_b" go to
// projector.gguf beside it (same fingerprint and step).
inline constexpr const char * kProjectorName = "projector";
inline constexpr const char * kProjectorFile = "projector.gguf";

// Shapes that must agree between an adapter and the model it is loaded onto.
std::string adapter_fingerprint(const LmView & lm);

void write_adapter_file(const std::string & path, const std::string & arch, const PolicyOptions & options,
                        const std::vector<LoraPair> & pairs, const std::string & fingerprint, int64_t step);
// Copies the file's A/B into `pairs` (which must match it exactly); returns the saved step.
int64_t read_adapter_into(const std::string & path, const std::string & arch, const std::string & fingerprint, std::vector<LoraPair> & pairs);
// projector.gguf: the projector adapter's A/B (see kProjectorFile); read returns the saved step.
void write_projector_file(const std::string & path, const LoraPair & projector, const std::string & fingerprint, int64_t step);
int64_t read_projector_into(const std::string & path, const std::string & fingerprint, LoraPair & projector);
// rank, alpha, targets and projector rank of a saved adapter, over `base` for everything else.
PolicyOptions read_adapter_options(const std::string & path, const PolicyOptions & base);

struct OptimizerState {
    struct Moments {
        std::string name;
        const std::vector<float> * m;
        const std::vector<float> * v;
    };
    int64_t step = 0, skipped_steps = 0;
    uint64_t rng[4] = {0, 0, 0, 0};
    OptimizerConfig opt;
    std::vector<Moments> tensors;
};

struct LoadedOptimizer {
    int64_t step = 0, skipped_steps = 0;
    uint64_t rng[4] = {0, 0, 0, 0};
    std::map<std::string, std::pair<std::vector<float>, std::vector<float>>> moments;
};

void write_optimizer_file(const std::string & path, const OptimizerState & state, const std::string & fingerprint);
LoadedOptimizer read_optimizer_file(const std::string & path, const std::string & fingerprint);

// Copies `pair`'s A/B into a live llama.cpp adapter (whatever backend holds it); false when the
// adapter has no pair for that base weight.
bool write_adapter_weight(llama_adapter_lora * adapter, const LoraPair & pair);

// gguf_write_to_file with the final flush and close checked: on a full disk llama.cpp's own version
// reports success for a truncated file.
void write_gguf(const gguf_context * g, const std::string & path, const std::string & what);

// Writes via `write(tmp_path)`, fsyncs, renames over `path`, fsyncs the folder.
void write_atomically(const std::string & path, const std::function<void(const std::string &)> & write);

}  // namespace visplay
