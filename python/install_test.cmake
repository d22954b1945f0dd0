# ctest python_install: installs the python component into a fresh prefix and imports the package
# from there alone (the build tree is not on the path), checking where it came from.
file(REMOVE_RECURSE ${PREFIX})
execute_process(COMMAND ${CMAKE_COMMAND} --install ${BUILD} --prefix ${PREFIX} --component python
                RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "cmake --install failed (${rc})")
endif()
set(ENV{PYTHONPATH} "${PREFIX}/${SITE}")
execute_process(
  COMMAND ${PYTHON} -c
    "import os, sparse_rtrl as s; p = os.path.realpath(s.__file__); assert p.startswith(os.path.realpath('${PREFIX}')), p; m = s.Model.torch_like(4, 2); r = s.Rtrl(m); r.step([0.5, -0.5]); print('imported', p, s.__version__)"
  WORKING_DIRECTORY ${PREFIX}
  RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "importing the installed package failed (${rc})")
endif()
