// The random numbers of the synthetic models: splitmix64 + Box-Muller, so `make-model` writes
// identical files on every platform and standard library (std::normal_distribution is
// implementation-defined), which lets tests pin a synthetic file by its sha256.
#pragma once

#include <cmath>
#include <cstdint>

namespace kvrag::tools {

class NormalRng {
public:
    explicit NormalRng(uint64_t seed) : s_(seed) {}
    // One N(0, 1) sample; pairs come from one Box-Muller step.
    float next() {
        if (have_) {
            have_ = false;
            return spare_;
        }
        const double u1 = (static_cast<double>(bits() >> 11) + 0.5) * 0x1.0p-53;
        const double u2 = (static_cast<double>(bits() >> 11) + 0.5) * 0x1.0p-53;
        const double r = std::sqrt(-2.0 * std::log(u1)), a = 6.283185307179586 * u2;
        spare_ = static_cast<float>(r * std::sin(a));
        have_ = true;
        return static_cast<float>(r * std::cos(a));
    }

private:
    uint64_t bits() {
        uint64_t z = (s_ += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return z ^ (z >> 31);
    }
    uint64_t s_;
    bool have_ = false;
    float spare_ = 0.0f;
};

}  // namespace kvrag::tools
