/// @file learners/influence_layout.hpp
/// @brief Forwarding header, kept so that existing `#include`s keep working: InfluenceLayout
///        lives in model/influence_layout.hpp (the detail kernels read it and must not include
///        learners/).
#pragma once

#include <sparse_rtrl/model/influence_layout.hpp>
