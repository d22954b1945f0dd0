// A downstream MPI program: installed headers + the exported sparse_rtrl::mpi target only.
#include <sparse_rtrl/mpi.hpp>

#include <iostream>

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int status = 0;
  {
    const sparse_rtrl::mpi::Communicator comm;
    const sparse_rtrl::Model<double> model(sparse_rtrl::EgruCell<double>(16, 4));
    const auto part = sparse_rtrl::mpi::checked_partition(comm, model, sparse_rtrl::RtrlOptions{}, "consumer");
    if (part.ranks() != comm.size()) status = 1;
    if (comm.rank() == 0)
      std::cout << "mpi consumer ok on " << comm.size() << " ranks, " << part.columns() << " columns\n";
  }
  MPI_Finalize();
  return status;
}
