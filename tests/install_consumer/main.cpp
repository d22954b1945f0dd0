// A downstream project: installed headers + exported target only.
#include <sparse_rtrl/sparse_rtrl.hpp>

#include <iostream>

int main() {
  sparse_rtrl::EgruCell<double> cell(4, 2);
  sparse_rtrl::Model<double> model(cell);
  sparse_rtrl::Rtrl<double> rtrl(model);
  rtrl.step(Eigen::Vector2d(0.5, -0.5));
  rtrl.accumulate_gradient(Eigen::Vector4d::Ones());
  std::cout << "consumer ok, version " << sparse_rtrl::version_string << ", gradient norm "
            << rtrl.gradient_columns().norm() << "\n";
  return rtrl.gradient_columns().allFinite() ? 0 : 1;
}
