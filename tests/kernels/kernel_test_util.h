// Helpers shared by the kernel tests (one definition, so the unity build of the suite never
// meets two copies).
#pragma once

#include <gtest/gtest.h>

#include <string>

#include "core/ggml_type.h"

namespace kvrag::kernels {

// A value-parameterised test's name suffix: the type's ggml name ("q4_0", "f16").
inline std::string type_param_name(const ::testing::TestParamInfo<GgmlType>& info) {
    return std::string(ggml_type_name(info.param));
}

}  // namespace kvrag::kernels
