// The golden cases of tests/data/golden (see its README), loaded for any test: the one-layer
// cases and the stacked ones (recognised by their layers.txt), every folder found at run time.
#pragma once

#include "test_support.hpp"

#include <algorithm>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

namespace test {

using sparse_rtrl::CellOptions;
using sparse_rtrl::EgruCell;
using sparse_rtrl::EgruParameters;
using sparse_rtrl::Model;
using sparse_rtrl::ParameterMask;
using sparse_rtrl::TriangularSurrogate;

struct GoldenCase {
  std::string name;
  Index n = 0, d = 0, T = 0;
  bool events = true;
  double gamma = 0.7, eps = 1.0, density = 1.0;
  EgruParameters<double> params, grad;
  bool has_mask = false;
  ParameterMask mask;
  Mat<double> X, G, Y;
};

inline Eigen::VectorXd row_vector(const Mat<double>& m) { return m.row(0).transpose(); }

inline GoldenCase load_case(const std::filesystem::path& dir) {
  auto f = [&](const char* name) { return test::load_text_matrix((dir / name).string()); };
  GoldenCase c;
  c.name = dir.filename().string();
  const Mat<double> meta = f("meta.txt");
  c.n = Index(meta(0, 0));
  c.d = Index(meta(0, 1));
  c.T = Index(meta(0, 2));
  c.events = meta(0, 3) != 0;
  c.gamma = meta(0, 4);
  c.eps = meta(0, 5);
  c.density = meta(0, 6);
  c.params = EgruParameters<double>(c.n, c.d);
  c.params.W = f("W.txt");
  c.params.R = f("R.txt");
  c.params.bW = row_vector(f("bW.txt"));
  c.params.bR = row_vector(f("bR.txt"));
  c.params.theta = row_vector(f("theta.txt"));
  c.grad = EgruParameters<double>(c.n, c.d);
  c.grad.W = f("gW.txt");
  c.grad.R = f("gR.txt");
  c.grad.bW = row_vector(f("gbW.txt"));
  c.grad.bR = row_vector(f("gbR.txt"));
  c.grad.theta = row_vector(f("gtheta.txt"));
  c.X = f("x.txt");
  c.G = f("G.txt");
  c.Y = f("y_ref.txt");
  if (std::filesystem::exists(dir / "maskR.txt")) {
    c.has_mask = true;
    c.mask = ParameterMask(ParameterMask::BoolMatrix::Constant(3 * c.n, c.d, true), f("maskR.txt").array() != 0.0);
  } else {
    c.mask = ParameterMask::dense(c.n, c.d);
  }
  return c;
}

/// Case folders: the flat (one-layer) ones, or with @p stacked the `stack-*` ones, recognised by
/// their layers.txt.
inline std::vector<std::filesystem::path> case_dirs(bool stacked = false) {
  std::vector<std::filesystem::path> dirs;
  for (const auto& e : std::filesystem::directory_iterator(test::data_dir() + "/golden"))
    if (e.is_directory() && std::filesystem::exists(e.path() / "meta.txt") &&
        std::filesystem::exists(e.path() / "layers.txt") == stacked)
      dirs.push_back(e.path());
  std::sort(dirs.begin(), dirs.end());
  return dirs;
}

/// A stacked golden case (README: "Stacked cases"), every per-layer quantity indexed by layer k.
struct StackCase {
  std::string name;
  Index L = 0, d = 0, T = 0;
  bool events = true;
  double gamma = 0.7, eps = 1.0;       ///< one surrogate for all layers
  std::vector<Index> sizes;            ///< n_0 ... n_{L-1}
  std::vector<EgruCell<double>> cells;  ///< parameters, mode and surrogate of each layer
  std::vector<ParameterMask> masks;    ///< each layer's mask (dense where the case has no mask file)
  std::vector<bool> has_maskW, has_maskR;
  Mat<double> X;                          ///< T x d
  std::vector<Mat<double>> G;             ///< T x n_k: dL/dy^k_t
  std::vector<Mat<double>> Y;             ///< T x n_k: expected outputs y^k_t
  std::vector<EgruParameters<double>> grad;  ///< expected gradient of each layer's parameters

  /// A new model of the case's layers and masks (bind learners to a named copy of it).
  Model<double> model() const { return Model<double>(cells, masks); }
  bool masked() const {
    for (Index k = 0; k < L; ++k)
      if (has_maskW[std::size_t(k)] || has_maskR[std::size_t(k)]) return true;
    return false;
  }
};

inline StackCase load_stack_case(const std::filesystem::path& dir) {
  auto f = [&](const std::string& name) { return test::load_text_matrix((dir / name).string()); };
  auto fl = [&](const char* name, Index k) { return f(std::string(name) + "_l" + std::to_string(k) + ".txt"); };
  auto has = [&](const char* name, Index k) {
    return std::filesystem::exists(dir / (std::string(name) + "_l" + std::to_string(k) + ".txt"));
  };
  StackCase c;
  c.name = dir.filename().string();
  const Mat<double> meta = f("meta.txt");
  c.L = Index(meta(0, 0));
  c.d = Index(meta(0, 1));
  c.T = Index(meta(0, 2));
  c.events = meta(0, 3) != 0;
  c.gamma = meta(0, 4);
  c.eps = meta(0, 5);
  const Mat<double> sizes = f("layers.txt");
  if (sizes.size() != c.L)
    throw std::runtime_error(c.name + ": layers.txt must hold L = " + std::to_string(c.L) + " sizes");
  c.X = f("x.txt");
  const TriangularSurrogate<double> surrogate(c.gamma, c.eps);
  Index inputs = c.d;
  for (Index k = 0; k < c.L; ++k) {
    const Index n = Index(sizes(0, k));
    c.sizes.push_back(n);
    EgruParameters<double> p(n, inputs);
    p.W = fl("W", k);
    p.R = fl("R", k);
    p.bW = row_vector(fl("bW", k));
    p.bR = row_vector(fl("bR", k));
    p.theta = row_vector(fl("theta", k));
    c.cells.emplace_back(p, CellOptions{c.events}, surrogate);
    c.has_maskW.push_back(has("maskW", k));
    c.has_maskR.push_back(has("maskR", k));
    c.masks.emplace_back(c.has_maskW.back() ? ParameterMask::BoolMatrix(fl("maskW", k).array() != 0.0)
                                            : ParameterMask::BoolMatrix::Constant(3 * n, inputs, true),
                         c.has_maskR.back() ? ParameterMask::BoolMatrix(fl("maskR", k).array() != 0.0)
                                            : ParameterMask::BoolMatrix::Constant(3 * n, n, true));
    EgruParameters<double> g(n, inputs);
    g.W = fl("gW", k);
    g.R = fl("gR", k);
    g.bW = row_vector(fl("gbW", k));
    g.bR = row_vector(fl("gbR", k));
    g.theta = row_vector(fl("gtheta", k));
    c.grad.push_back(std::move(g));
    c.G.push_back(fl("G", k));
    c.Y.push_back(fl("y_ref", k));
    inputs = n;
  }
  return c;
}

}  // namespace test
