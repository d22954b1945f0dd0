# ctest driver: configure + install sparse_rtrl into a temporary prefix, then configure, build
# and run a consumer project that finds it with find_package().
file(REMOVE_RECURSE "${WORK_DIR}")
set(prefix "${WORK_DIR}/prefix")
function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "command failed (${rc}): ${ARGN}\n${out}\n${err}")
  endif()
  message(STATUS "${out}")
endfunction()
# The install needs neither Catch2 nor Google Benchmark: both are disabled here, so this fails
# if configuring or installing with tests, examples and benchmarks off ever looks for them.
run(${CMAKE_COMMAND} -S "${SOURCE_DIR}" -B "${WORK_DIR}/lib" -G "${GENERATOR}"
    -DCMAKE_INSTALL_PREFIX=${prefix} -DSPARSE_RTRL_BUILD_TESTS=OFF
    -DSPARSE_RTRL_BUILD_EXAMPLES=OFF -DSPARSE_RTRL_BUILD_BENCHMARKS=OFF
    -DCMAKE_DISABLE_FIND_PACKAGE_Catch2=ON -DCMAKE_DISABLE_FIND_PACKAGE_benchmark=ON)
run(${CMAKE_COMMAND} --install "${WORK_DIR}/lib")
if(NOT EXISTS "${prefix}/share/cmake/sparse_rtrl/sparse_rtrlConfigVersion.cmake")
  message(FATAL_ERROR "version file not installed")
endif()
# A consumer configured without a build type, or in Debug, is told once that it builds the library
# without optimisation; one configured in Release is not.
function(configure_consumer build_type expect_warning)
  execute_process(COMMAND ${CMAKE_COMMAND} -S "${CONSUMER_DIR}" -B "${WORK_DIR}/consumer" -G "${GENERATOR}"
                          -DCMAKE_PREFIX_PATH=${prefix} "-DCMAKE_BUILD_TYPE=${build_type}"
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "consumer configure failed (${rc}) with build type '${build_type}':\n${out}\n${err}")
  endif()
  string(REGEX MATCHALL "compiled without optimisation" warnings "${err}")
  list(LENGTH warnings count)
  if(expect_warning AND NOT count EQUAL 1)
    message(FATAL_ERROR "build type '${build_type}': expected one warning about optimisation, got ${count}:\n${err}")
  elseif(NOT expect_warning AND NOT count EQUAL 0)
    message(FATAL_ERROR "build type '${build_type}': expected no warning about optimisation:\n${err}")
  endif()
endfunction()
configure_consumer("" TRUE)
configure_consumer("Debug" TRUE)
configure_consumer("Release" FALSE)
run(${CMAKE_COMMAND} --build "${WORK_DIR}/consumer")
run("${WORK_DIR}/consumer/consumer")

# The mpi component (when this build has MPI): a consumer asking for it gets sparse_rtrl::mpi
# with MPI, builds, and runs on 2 processes.
if(WITH_MPI)
  run(${CMAKE_COMMAND} -S "${MPI_CONSUMER_DIR}" -B "${WORK_DIR}/consumer_mpi" -G "${GENERATOR}"
      -DCMAKE_PREFIX_PATH=${prefix} -DCMAKE_BUILD_TYPE=Release)
  run(${CMAKE_COMMAND} --build "${WORK_DIR}/consumer_mpi")
  set(ENV{OMPI_MCA_rmaps_base_oversubscribe} 1)
  set(ENV{OMPI_ALLOW_RUN_AS_ROOT} 1)
  set(ENV{OMPI_ALLOW_RUN_AS_ROOT_CONFIRM} 1)
  run(${MPIEXEC} -n 2 "${WORK_DIR}/consumer_mpi/consumer_mpi")
  # An unknown component is refused.
  execute_process(COMMAND ${CMAKE_COMMAND} -S "${MPI_CONSUMER_DIR}" -B "${WORK_DIR}/consumer_bad" -G "${GENERATOR}"
                          -DCMAKE_PREFIX_PATH=${prefix} -DCOMPONENT=nonsense
                  RESULT_VARIABLE rc OUTPUT_QUIET ERROR_VARIABLE err)
  if(rc EQUAL 0)
    message(FATAL_ERROR "find_package(sparse_rtrl COMPONENTS nonsense) succeeded")
  endif()
endif()
