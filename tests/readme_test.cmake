# ctest driver: the README's first ```cpp block must be a complete program that compiles against
# the source tree's headers and Eigen (nothing is wrapped around it) and runs with exit code 0.
#   cmake -DREADME=<README.md> -DINCLUDE_DIR=<include dir> -DWORK_DIR=<scratch dir>
#         [-DGENERATOR=<generator>] [-DCXX_COMPILER=<c++>] [-DEigen3_DIR=<dir>]
#         [-DSAME_AS=<file the block must equal>] [-DEXPECT_REGEX=<regex its output must match>]
#         -P readme_test.cmake
# Any failure (no block, a block that differs from SAME_AS, configure, compile, link, run, output)
# ends with "README example FAILED".
foreach(var README INCLUDE_DIR WORK_DIR)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "README example FAILED: ${var} not given")
  endif()
endforeach()

file(READ "${README}" text)
set(open_fence "```cpp\n")
string(FIND "${text}" "${open_fence}" begin)
if(begin EQUAL -1)
  message(FATAL_ERROR "README example FAILED: no ```cpp block in ${README}")
endif()
string(LENGTH "${open_fence}" fence_length)
math(EXPR begin "${begin} + ${fence_length}")
string(SUBSTRING "${text}" ${begin} -1 text)
string(FIND "${text}" "\n```" end)
if(end EQUAL -1)
  message(FATAL_ERROR "README example FAILED: the first ```cpp block of ${README} is not closed")
endif()
math(EXPR end "${end} + 1")  # keep the block's last newline
string(SUBSTRING "${text}" 0 ${end} program)

if(SAME_AS)
  file(READ "${SAME_AS}" expected)
  if(NOT program STREQUAL expected)
    message(FATAL_ERROR "README example FAILED: the first ```cpp block of ${README} differs from ${SAME_AS} "
                        "(the README shows that file as it is: copy it in again)")
  endif()
endif()

file(REMOVE_RECURSE "${WORK_DIR}")
file(WRITE "${WORK_DIR}/src/readme_example.cpp" "${program}")
file(WRITE "${WORK_DIR}/src/CMakeLists.txt" [=[
cmake_minimum_required(VERSION 3.21)
project(readme_example LANGUAGES CXX)
find_package(Eigen3 3.4 REQUIRED NO_MODULE)
find_package(Threads)
add_executable(readme_example readme_example.cpp)
target_compile_features(readme_example PRIVATE cxx_std_17)
target_include_directories(readme_example PRIVATE "${SPARSE_RTRL_INCLUDE_DIR}")
target_link_libraries(readme_example PRIVATE Eigen3::Eigen)
if(Threads_FOUND)
  target_link_libraries(readme_example PRIVATE Threads::Threads)
endif()
if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
  target_compile_options(readme_example PRIVATE -Wall -Wextra -Wpedantic -Werror)
endif()
]=])

function(run what)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT 300)
  if(NOT rc EQUAL 0)
    list(JOIN ARGN " " command)
    message(FATAL_ERROR "README example FAILED to ${what} (${rc}): ${command}\n${out}\n${err}")
  endif()
  message(STATUS "${out}")
  set(last_output "${out}" PARENT_SCOPE)
endfunction()

set(configure_args -S "${WORK_DIR}/src" -B "${WORK_DIR}/build" -DCMAKE_BUILD_TYPE=Release
    "-DSPARSE_RTRL_INCLUDE_DIR=${INCLUDE_DIR}")
if(GENERATOR)
  list(APPEND configure_args -G "${GENERATOR}")
endif()
if(CXX_COMPILER)
  list(APPEND configure_args "-DCMAKE_CXX_COMPILER=${CXX_COMPILER}")
endif()
if(Eigen3_DIR)
  list(APPEND configure_args "-DEigen3_DIR=${Eigen3_DIR}")
endif()
run(configure ${CMAKE_COMMAND} ${configure_args})
run(compile ${CMAKE_COMMAND} --build "${WORK_DIR}/build")
run(run "${WORK_DIR}/build/readme_example")
if(EXPECT_REGEX AND NOT last_output MATCHES "${EXPECT_REGEX}")
  message(FATAL_ERROR "README example FAILED: its output does not match '${EXPECT_REGEX}':\n${last_output}")
endif()
