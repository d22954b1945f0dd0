# ctest driver: runs a command and requires its exit code and a regex in its output.
#   cmake -DEXPECT_CODE=<n> -DEXPECT_REGEX=<regex> -DCOMMAND=<program;args...> -P expect_exit.cmake
execute_process(COMMAND ${COMMAND} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT 120)
if(NOT rc STREQUAL "${EXPECT_CODE}")
  message(FATAL_ERROR "expected exit code ${EXPECT_CODE}, got ${rc}:\n${out}\n${err}")
endif()
if(NOT "${out}${err}" MATCHES "${EXPECT_REGEX}")
  message(FATAL_ERROR "output does not match '${EXPECT_REGEX}':\n${out}\n${err}")
endif()
message(STATUS "exit code ${rc} and output as expected")
