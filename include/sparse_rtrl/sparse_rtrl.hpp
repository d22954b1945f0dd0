/// @file sparse_rtrl.hpp
/// @brief Umbrella header: everything users need.
///
/// sparse_rtrl computes exact RTRL gradients of event-based GRUs, skipping the influence rows
/// of silent units and the columns of pruned weights. See README.md and the model note.
#pragma once

#include <sparse_rtrl/config.hpp>
#include <sparse_rtrl/model/surrogate.hpp>
#include <sparse_rtrl/model/egru_parameters.hpp>
#include <sparse_rtrl/model/egru_cell.hpp>
#include <sparse_rtrl/model/parameter_mask.hpp>
#include <sparse_rtrl/model/influence_layout.hpp>
#include <sparse_rtrl/learners/work_counters.hpp>
#include <sparse_rtrl/model/model.hpp>
#include <sparse_rtrl/learners/rtrl.hpp>
#include <sparse_rtrl/streams/rtrl_streams.hpp>
#include <sparse_rtrl/parallel/denormals.hpp>
#include <sparse_rtrl/learners/bptt.hpp>
#include <sparse_rtrl/learners/snap.hpp>
#include <sparse_rtrl/learners/truncated_bptt.hpp>
#include <sparse_rtrl/learners/uoro.hpp>
#include <sparse_rtrl/model/inference.hpp>
#include <sparse_rtrl/training/activity_regularizer.hpp>
#include <sparse_rtrl/training/readout.hpp>
#include <sparse_rtrl/training/loss.hpp>
#include <sparse_rtrl/training/optimizer.hpp>
#include <sparse_rtrl/training/pruning.hpp>
#include <sparse_rtrl/training/threshold_constraint.hpp>
#include <sparse_rtrl/io/npz.hpp>
#include <sparse_rtrl/io/checkpoint.hpp>
#include <sparse_rtrl/io/torch_gru.hpp>
