/// @file sparse_rtrl.hpp
/// @brief Umbrella header: everything users need.
///
/// sparse_rtrl computes exact RTRL gradients of event-based GRUs, skipping the influence rows
/// of silent units and the columns of pruned weights. See README.md and the model note.
#pragma once

#include <sparse_rtrl/config.hpp>
#include <sparse_rtrl/surrogate.hpp>
#include <sparse_rtrl/egru_parameters.hpp>
#include <sparse_rtrl/egru_cell.hpp>
#include <sparse_rtrl/parameter_mask.hpp>
#include <sparse_rtrl/influence_layout.hpp>
#include <sparse_rtrl/work_counters.hpp>
#include <sparse_rtrl/model.hpp>
#include <sparse_rtrl/rtrl.hpp>
#include <sparse_rtrl/rtrl_streams.hpp>
#include <sparse_rtrl/denormals.hpp>
#include <sparse_rtrl/bptt.hpp>
#include <sparse_rtrl/snap.hpp>
#include <sparse_rtrl/inference.hpp>
#include <sparse_rtrl/activity_regularizer.hpp>
#include <sparse_rtrl/readout.hpp>
#include <sparse_rtrl/loss.hpp>
#include <sparse_rtrl/optimizer.hpp>
#include <sparse_rtrl/pruning.hpp>
