// visplay_kernels_bench: throughput of the GRPO kernels, CPU reference and CUDA, as llm.c times its
// kernels: median of N runs after a warm-up, caches flushed between runs, bandwidth counted as the
// fewest bytes each kernel must move (every input read once, every output written once):
//   lora_adamw          28 B/element (read param, grad, m, v; write param, m, v)
//   grad_sum_squares     4 B/element (read grad)
//   group_advantages     8 B/element + 4 B/offset (read reward, write advantage)
//   head_logsumexp       4 B/element (read logits; 12 B per row of targets and results)
//   head_softmax_grad    8 B/element (read logits, write d logits in place)
// On the GPU the reference ceiling is a device-to-device cudaMemcpy, measured here (bytes read +
// written), and each kernel's GB/s is also given as a fraction of it.
//
// usage: visplay_kernels_bench [--json] [--repeats N] [--threads N] [--quick] [--no-cpu] [--no-cuda]
//   --quick   AdamW at 1M and 16M only (CI-sized)
//   --threads N  CPU threads (default: all hardware threads)
#include "grpo_kernels.h"

#ifdef VISPLAY_CUDA
#include <cuda_runtime.h>
#endif

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace {

struct Options {
    bool json = false, quick = false, cpu = true, cuda = true;
    int repeats = 0;  // 0: per size
    int threads = 0;
};

struct Row {
    std::string kernel, device, shape;
    int64_t elements = 0;
    double bytes = 0, median_ms = 0, min_ms = 0, gbps = 0;
    double of_memcpy = 0;  // GPU only: gbps / device-to-device memcpy GB/s
};

double median(std::vector<double> xs) {
    std::sort(xs.begin(), xs.end());
    const size_t n = xs.size();
    return n % 2 ? xs[n / 2] : 0.5 * (xs[n / 2 - 1] + xs[n / 2]);
}

std::string cpu_model() {
    std::ifstream f("/proc/cpuinfo");
    std::string line;
    while (std::getline(f, line)) {
        if (line.rfind("model name", 0) == 0) {
            const size_t colon = line.find(':');
            if (colon != std::string::npos) return line.substr(line.find_first_not_of(" \t", colon + 1));
        }
    }
    return "unknown CPU";
}

std::string human(int64_t n) {
    char buf[32];
    if (n % (1 << 20) == 0) std::snprintf(buf, sizeof buf, "%lldM", static_cast<long long>(n >> 20));
    else if (n % (1 << 10) == 0) std::snprintf(buf, sizeof buf, "%lldK", static_cast<long long>(n >> 10));
    else std::snprintf(buf, sizeof buf, "%lld", static_cast<long long>(n));
    return buf;
}

std::vector<float> random_floats(size_t n, float scale, uint64_t seed) {
    std::vector<float> x(n);
    std::mt19937 rng(static_cast<uint32_t>(seed));
    std::normal_distribution<float> normal(0.0f, scale);
    // Drawing 64M normals is slow; repeat a random block of 1M with a varying offset instead.
    const size_t block = std::min<size_t>(n, 1 << 20);
    for (size_t i = 0; i < block; ++i) x[i] = normal(rng);
    for (size_t i = block; i < n; ++i) x[i] = x[i % block] * (1.0f + static_cast<float>(i / block) * 1e-3f);
    return x;
}

// LoRA-shaped tensors: rank 64 x 4096 (256K floats) each, the last one takes the remainder.
std::vector<int64_t> lora_split(int64_t total) {
    const int64_t piece = 64 * 4096;
    std::vector<int64_t> sizes;
    for (int64_t done = 0; done < total; done += piece) sizes.push_back(std::min(piece, total - done));
    return sizes;
}

struct GroupShape {
    int groups, size;
};

// ---- CPU ------------------------------------------------------------------------------------------

// Evicts the caches between timed runs by writing a buffer larger than any L3.
struct CpuFlush {
    std::vector<char> junk = std::vector<char>(size_t(256) << 20);
    void operator()() {
        static char c = 1;
        std::memset(junk.data(), c++, junk.size());
    }
};

template <typename Fn>
std::vector<double> time_cpu(int repeats, CpuFlush & flush, Fn fn) {
    fn();  // warm-up
    std::vector<double> ms;
    for (int r = 0; r < repeats; ++r) {
        flush();
        const auto t0 = std::chrono::steady_clock::now();
        fn();
        const auto t1 = std::chrono::steady_clock::now();
        ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    }
    return ms;
}

Row make_row(const std::string & kernel, const std::string & device, const std::string & shape, int64_t elements, double bytes,
             const std::vector<double> & ms) {
    Row r{kernel, device, shape, elements, bytes};
    r.median_ms = median(ms);
    r.min_ms = *std::min_element(ms.begin(), ms.end());
    r.gbps = bytes / (r.median_ms * 1e-3) / 1e9;
    return r;
}

int adamw_repeats(const Options & o, int64_t n) { return o.repeats > 0 ? o.repeats : (n >= (int64_t(1) << 26) ? 5 : n >= (int64_t(1) << 24) ? 9 : 21); }

void bench_cpu(const Options & o, const std::vector<int64_t> & sizes, const std::vector<GroupShape> & shapes, std::vector<Row> & rows) {
    CpuFlush flush;
    for (int64_t n : sizes) {
        std::vector<float> p = random_floats(n, 0.02f, 1), g = random_floats(n, 1e-3f, 2), m = random_floats(n, 1e-4f, 3), v = random_floats(n, 1e-6f, 4);
        for (float & x : v) x = x * x;
        std::vector<visplay::AdamWTensor> ts;
        int64_t at = 0;
        for (int64_t s : lora_split(n)) {
            ts.push_back({p.data() + at, g.data() + at, m.data() + at, v.data() + at, s});
            at += s;
        }
        visplay::AdamWConfig cfg;
        cfg.step = 10;
        const std::string shape = human(n) + " (" + std::to_string(ts.size()) + " tensors)";
        const int reps = adamw_repeats(o, n);
        rows.push_back(make_row("lora_adamw", "cpu", shape, n, 28.0 * n,
                                time_cpu(reps, flush, [&] { visplay::lora_adamw_cpu(ts.data(), static_cast<int>(ts.size()), cfg, o.threads); })));
        rows.push_back(make_row("grad_sum_squares", "cpu", shape, n, 4.0 * n,
                                time_cpu(reps, flush, [&] { (void)visplay::grad_sum_squares_cpu(ts.data(), static_cast<int>(ts.size()), o.threads); })));
    }
    for (const GroupShape & gs : shapes) {
        const int64_t n = int64_t(gs.groups) * gs.size;
        std::vector<float> r = random_floats(n, 1.0f, 5), out(n);
        std::vector<int32_t> off(gs.groups + 1);
        for (int g = 0; g <= gs.groups; ++g) off[g] = g * gs.size;
        const std::string shape = std::to_string(gs.groups) + " x " + std::to_string(gs.size);
        rows.push_back(make_row("group_advantages", "cpu", shape, n, 8.0 * n + 4.0 * (gs.groups + 1),
                                time_cpu(o.repeats > 0 ? o.repeats : 21, flush, [&] {
                                    visplay::group_advantages_cpu(r.data(), off.data(), gs.groups, 1e-6f, out.data());
                                })));
    }
}

// ---- CUDA -----------------------------------------------------------------------------------------

#ifdef VISPLAY_CUDA

void ck(cudaError_t err, const char * what) {
    if (err != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(err));
}

struct DeviceBuffer {
    void * ptr = nullptr;
    explicit DeviceBuffer(size_t bytes) { ck(cudaMalloc(&ptr, std::max<size_t>(bytes, 16)), "cudaMalloc"); }
    ~DeviceBuffer() { cudaFree(ptr); }
    DeviceBuffer(const DeviceBuffer &) = delete;
    DeviceBuffer & operator=(const DeviceBuffer &) = delete;
    float * f() const { return static_cast<float *>(ptr); }
};

struct GpuTimer {
    cudaStream_t stream = nullptr;
    cudaEvent_t start = nullptr, stop = nullptr;
    DeviceBuffer flush_buf;  // twice the L2: a memset of it between runs evicts the kernel's data
    size_t flush_bytes;
    GpuTimer(cudaStream_t s, size_t l2) : stream(s), flush_buf(std::max<size_t>(2 * l2, 64 << 20)), flush_bytes(std::max<size_t>(2 * l2, 64 << 20)) {
        ck(cudaEventCreate(&start), "cudaEventCreate");
        ck(cudaEventCreate(&stop), "cudaEventCreate");
    }
    ~GpuTimer() {
        cudaEventDestroy(start);
        cudaEventDestroy(stop);
    }
    template <typename Fn>
    std::vector<double> run(int repeats, Fn fn, bool flush = true) {
        fn();  // warm-up: module load, first-touch
        ck(cudaStreamSynchronize(stream), "sync");
        std::vector<double> ms;
        for (int r = 0; r < repeats; ++r) {
            if (flush) ck(cudaMemsetAsync(flush_buf.ptr, r & 0xff, flush_bytes, stream), "flush");
            ck(cudaEventRecord(start, stream), "cudaEventRecord");
            fn();
            ck(cudaEventRecord(stop, stream), "cudaEventRecord");
            ck(cudaEventSynchronize(stop), "cudaEventSynchronize");
            float t = 0;
            ck(cudaEventElapsedTime(&t, start, stop), "cudaEventElapsedTime");
            ms.push_back(t);
        }
        return ms;
    }
};

void upload(float * dst, const std::vector<float> & src) { ck(cudaMemcpy(dst, src.data(), src.size() * 4, cudaMemcpyHostToDevice), "cudaMemcpy"); }

// Returns the device-to-device memcpy GB/s (bytes read + written).
double bench_cuda(const Options & o, const std::vector<int64_t> & sizes, const std::vector<GroupShape> & shapes, std::vector<Row> & rows,
                  std::string & gpu_name) {
    cudaDeviceProp prop{};
    ck(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
    int l2 = 0, sms = 0;
    ck(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, 0), "attr");
    ck(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0), "attr");
    char desc[700];
    std::snprintf(desc, sizeof desc, "%s (sm_%d%d, %d SMs, %d MB L2, %.0f GiB)", prop.name, prop.major, prop.minor, sms, l2 >> 20,
                  static_cast<double>(prop.totalGlobalMem) / (1 << 30));
    gpu_name = desc;
    cudaStream_t stream = nullptr;
    ck(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");
    GpuTimer timer(stream, static_cast<size_t>(l2));

    // The ceiling: a 1 GiB device-to-device copy.
    double memcpy_gbps = 0;
    {
        const size_t bytes = size_t(1) << 30;
        DeviceBuffer a(bytes), b(bytes);
        ck(cudaMemset(a.ptr, 1, bytes), "cudaMemset");
        const std::vector<double> ms = timer.run(11, [&] { ck(cudaMemcpyAsync(b.ptr, a.ptr, bytes, cudaMemcpyDeviceToDevice, stream), "memcpy"); }, false);
        memcpy_gbps = 2.0 * bytes / (median(ms) * 1e-3) / 1e9;
        Row r{"cudaMemcpy D2D", "cuda", "1G bytes", int64_t(bytes / 4), 2.0 * bytes};
        r.median_ms = median(ms);
        r.min_ms = *std::min_element(ms.begin(), ms.end());
        r.gbps = memcpy_gbps;
        r.of_memcpy = 1.0;
        rows.push_back(r);
    }
    auto add = [&](Row r) {
        r.of_memcpy = r.gbps / memcpy_gbps;
        rows.push_back(r);
    };
    for (int64_t n : sizes) {
        DeviceBuffer p(n * 4), g(n * 4), m(n * 4), v(n * 4);
        {
            std::vector<float> x = random_floats(n, 0.02f, 1);
            upload(p.f(), x);
            x = random_floats(n, 1e-3f, 2);
            upload(g.f(), x);
            x = random_floats(n, 1e-4f, 3);
            upload(m.f(), x);
            x = random_floats(n, 1e-6f, 4);
            for (float & e : x) e = e * e;
            upload(v.f(), x);
        }
        std::vector<visplay::AdamWTensor> ts;
        int64_t at = 0;
        for (int64_t s : lora_split(n)) {
            ts.push_back({p.f() + at, g.f() + at, m.f() + at, v.f() + at, s});
            at += s;
        }
        visplay::AdamWConfig cfg;
        cfg.step = 10;
        const std::string shape = human(n) + " (" + std::to_string(ts.size()) + " tensors)";
        const int reps = o.repeats > 0 ? o.repeats : 21;
        add(make_row("lora_adamw", "cuda", shape, n, 28.0 * n,
                     timer.run(reps, [&] { visplay::lora_adamw_cuda(ts.data(), static_cast<int>(ts.size()), cfg, stream); })));
        // Includes the temporary allocation, the 8-byte copy back and the stream synchronization.
        add(make_row("grad_sum_squares", "cuda", shape, n, 4.0 * n,
                     timer.run(reps, [&] { (void)visplay::grad_sum_squares_cuda(ts.data(), static_cast<int>(ts.size()), stream); })));
    }
    if (!o.quick) {
        // The grad norm at 256M elements (1 GiB): the fixed cost (two launches, the 8-byte copy
        // back, the synchronization) is tens of microseconds, a third of the time at 64M.
        const int64_t n = int64_t(1) << 28;
        DeviceBuffer g(n * 4);
        upload(g.f(), random_floats(n, 1e-3f, 2));
        std::vector<visplay::AdamWTensor> ts;
        int64_t at = 0;
        for (int64_t s : lora_split(n)) {
            ts.push_back({g.f() + at, g.f() + at, g.f() + at, g.f() + at, s});  // only grad is read
            at += s;
        }
        add(make_row("grad_sum_squares", "cuda", human(n) + " (" + std::to_string(ts.size()) + " tensors)", n, 4.0 * n,
                     timer.run(o.repeats > 0 ? o.repeats : 11, [&] { (void)visplay::grad_sum_squares_cuda(ts.data(), static_cast<int>(ts.size()), stream); })));
    }
    for (const GroupShape & gs : shapes) {
        const int64_t n = int64_t(gs.groups) * gs.size;
        DeviceBuffer r(n * 4), out(n * 4), off((gs.groups + 1) * 4);
        upload(r.f(), random_floats(n, 1.0f, 5));
        std::vector<int32_t> h_off(gs.groups + 1);
        for (int g = 0; g <= gs.groups; ++g) h_off[g] = g * gs.size;
        ck(cudaMemcpy(off.ptr, h_off.data(), h_off.size() * 4, cudaMemcpyHostToDevice), "cudaMemcpy");
        const std::string shape = std::to_string(gs.groups) + " x " + std::to_string(gs.size);
        add(make_row("group_advantages", "cuda", shape, n, 8.0 * n + 4.0 * (gs.groups + 1),
                     timer.run(o.repeats > 0 ? o.repeats : 51, [&] {
                         visplay::group_advantages_cuda(r.f(), static_cast<const int32_t *>(off.ptr), gs.groups, 1e-6f, out.f(), stream);
                     })));
    }
    // The head's log-softmax at the trainer's chunk: 256 rows of Qwen's 151,936 logits (155 MB).
    {
        const int64_t rows = 256, n_vocab = 151936, n = rows * n_vocab;
        DeviceBuffer l(n * 4), t(rows * 4), lse(rows * 4), tl(rows * 4), w(rows * 4);
        upload(l.f(), random_floats(n, 3.0f, 6));
        std::vector<int32_t> h_t(rows);
        for (int64_t r = 0; r < rows; ++r) h_t[r] = static_cast<int32_t>((r * 7919) % n_vocab);
        ck(cudaMemcpy(t.ptr, h_t.data(), rows * 4, cudaMemcpyHostToDevice), "cudaMemcpy");
        upload(w.f(), random_floats(rows, 1.0f, 7));
        const std::string shape = std::to_string(rows) + " x " + std::to_string(n_vocab);
        const int reps = o.repeats > 0 ? o.repeats : 51;
        add(make_row("head_logsumexp", "cuda", shape, n, 4.0 * n + 12.0 * rows, timer.run(reps, [&] {
                         visplay::head_logsumexp_cuda(l.f(), rows, n_vocab, static_cast<const int32_t *>(t.ptr), lse.f(), tl.f(), stream);
                     })));
        // In place, as the trainer runs it: w is tiny, so repeated runs keep the values finite.
        add(make_row("head_softmax_grad", "cuda", shape, n, 8.0 * n + 12.0 * rows, timer.run(reps, [&] {
                         visplay::head_softmax_grad_cuda(l.f(), rows, n_vocab, static_cast<const int32_t *>(t.ptr), lse.f(), w.f(), l.f(), stream);
                     })));
    }
    ck(cudaStreamDestroy(stream), "cudaStreamDestroy");
    return memcpy_gbps;
}

#endif  // VISPLAY_CUDA

void print_table(const std::string & cpu, int threads, const std::string & gpu, const std::vector<Row> & rows) {
    std::printf("cpu: %s, %d threads\n", cpu.c_str(), threads);
    std::printf("gpu: %s\n\n", gpu.c_str());
    std::printf("%-18s %-5s %-22s %12s %12s %10s %10s\n", "kernel", "dev", "size", "median ms", "min ms", "GB/s", "of memcpy");
    for (const Row & r : rows) {
        char frac[32] = "";
        if (r.device == "cuda") std::snprintf(frac, sizeof frac, "%.0f%%", 100.0 * r.of_memcpy);
        std::printf("%-18s %-5s %-22s %12.4f %12.4f %10.1f %10s\n", r.kernel.c_str(), r.device.c_str(), r.shape.c_str(), r.median_ms, r.min_ms,
                    r.gbps, frac);
    }
}

std::string json_escape(const std::string & s) {
    std::string out;
    for (char c : s) {
        if (c == '"' || c == '\\') out += '\\';
        if (static_cast<unsigned char>(c) >= 0x20) out += c;
    }
    return out;
}

void print_json(const std::string & cpu, int threads, const std::string & gpu, double memcpy_gbps, const std::vector<Row> & rows) {
    std::printf("{\n  \"machine\": {\"cpu\": \"%s\", \"cpuThreads\": %d, \"gpu\": %s, \"memcpyGBps\": %s},\n  \"results\": [\n",
                json_escape(cpu).c_str(), threads, gpu.empty() ? "null" : ("\"" + json_escape(gpu) + "\"").c_str(),
                memcpy_gbps > 0 ? std::to_string(memcpy_gbps).c_str() : "null");
    for (size_t i = 0; i < rows.size(); ++i) {
        const Row & r = rows[i];
        std::printf("    {\"kernel\": \"%s\", \"device\": \"%s\", \"size\": \"%s\", \"elements\": %lld, \"bytes\": %.0f, "
                    "\"medianMs\": %.6f, \"minMs\": %.6f, \"GBps\": %.3f, \"ofMemcpy\": %s}%s\n",
                    r.kernel.c_str(), r.device.c_str(), json_escape(r.shape).c_str(), static_cast<long long>(r.elements), r.bytes, r.median_ms,
                    r.min_ms, r.gbps, r.device == "cuda" ? std::to_string(r.of_memcpy).c_str() : "null", i + 1 < rows.size() ? "," : "");
    }
    std::printf("  ]\n}\n");
}

}  // namespace

int main(int argc, char ** argv) {
    Options o;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--json") o.json = true;
        else if (a == "--quick") o.quick = true;
        else if (a == "--no-cpu") o.cpu = false;
        else if (a == "--no-cuda") o.cuda = false;
        else if (a == "--repeats" && i + 1 < argc) o.repeats = std::max(1, std::atoi(argv[++i]));
        else if (a == "--threads" && i + 1 < argc) o.threads = std::max(0, std::atoi(argv[++i]));
        else {
            std::fprintf(stderr, "usage: %s [--json] [--repeats N] [--threads N] [--quick] [--no-cpu] [--no-cuda]\n", argv[0]);
            return 2;
        }
    }
    // AdamW: 1M, 16M, 64M floats (LoRA rank 64 on a 3B model is about 30M parameters).
    std::vector<int64_t> sizes = {int64_t(1) << 20, int64_t(1) << 24};
    if (!o.quick) sizes.push_back(int64_t(1) << 26);
    // GRPO's shapes: many prompts x 8 samples; fewer prompts x many samples; one huge group; and
    // 64M rewards in groups of 1024, big enough that launch and synchronization costs do not
    // hide the kernel's bandwidth (GRPO's real batches are launch-bound on a GPU: microseconds).
    std::vector<GroupShape> shapes = {{4096, 8}, {512, 1024}, {1, 1 << 20}};
    if (!o.quick) shapes.push_back({65536, 1024});
    const int threads = o.threads > 0 ? o.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));

    std::vector<Row> rows;
    std::string gpu = "";
    double memcpy_gbps = 0;
    try {
        if (o.cpu) bench_cpu(o, sizes, shapes, rows);
#ifdef VISPLAY_CUDA
        int count = 0;
        const cudaError_t err = cudaGetDeviceCount(&count);
        if (!o.cuda) gpu = "";
        else if (err != cudaSuccess || count == 0) {
            std::fprintf(stderr, "SKIP cuda: no CUDA device (%s)\n", err != cudaSuccess ? cudaGetErrorString(err) : "0 devices");
        } else {
            memcpy_gbps = bench_cuda(o, sizes, shapes, rows, gpu);
        }
#else
        std::fprintf(stderr, "SKIP cuda: built without CUDA (configure with -DVISPLAY_CUDA=ON)\n");
#endif
    } catch (const std::exception & e) {
        std::fprintf(stderr, "visplay_kernels_bench: %s\n", e.what());
        return 1;
    }
    const std::string cpu = cpu_model();
    if (o.json) print_json(cpu, threads, gpu, memcpy_gbps, rows);
    else print_table(cpu, threads, gpu.empty() ? "none" : gpu + ", memcpy D2D " + std::to_string(static_cast<int>(memcpy_gbps)) + " GB/s", rows);
    return 0;
}
