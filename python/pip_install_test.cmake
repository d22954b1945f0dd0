# ctest python_pip_install: `pip install` of the repository into a fresh virtual environment (in the
# build tree, with Debian's NumPy visible: --system-site-packages), offline (--no-build-isolation
# --no-index: Debian's setuptools and pybind11), then the example and the whole pytest suite run
# from there, with the build tree off the path: they import the installed package only.
#   -DSRC=<repository> -DWORK=<folder> -DPYTHON=<interpreter> -DLAUNCHER=<compiler launcher or empty>
file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK})
unset(ENV{PYTHONPATH})
set(venv ${WORK}/venv)
execute_process(COMMAND ${PYTHON} -m venv --system-site-packages ${venv} RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "python3 -m venv failed (${rc}): Debian needs python3-venv (cmake/install_deps.sh --python)")
endif()
set(py ${venv}/bin/python)

# The CI's optimisation level (-O1, no debug information: the compiler cache can reuse the objects
# across build folders) instead of Release's -O3, which would double this test's compile time.
set(ENV{SPARSE_RTRL_PIP_BUILD_DIR} ${WORK}/pip_build)
set(ENV{SPARSE_RTRL_PIP_BUILD_TYPE} Release)
set(ENV{SPARSE_RTRL_PIP_CMAKE_ARGS} "-DCMAKE_CXX_FLAGS_RELEASE=-O1 -DNDEBUG")
if(NOT "${LAUNCHER}" STREQUAL "")
  set(ENV{CMAKE_CXX_COMPILER_LAUNCHER} ${LAUNCHER})
endif()
execute_process(COMMAND ${py} -m pip install --no-build-isolation --no-index --no-cache-dir --no-deps ${SRC}
                WORKING_DIRECTORY ${WORK} RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "pip install failed (${rc}): needs python3-pip, python3-setuptools, pybind11-dev, python3-dev")
endif()

execute_process(
  COMMAND ${py} -c "import os, sys, sparse_rtrl as s; p = os.path.realpath(s.__file__); assert p.startswith(os.path.realpath(sys.prefix)), p; d = os.path.dirname(p); assert os.path.exists(os.path.join(d, '__init__.pyi')) and os.path.exists(os.path.join(d, 'py.typed')); print('installed', p, s.__version__)"
  WORKING_DIRECTORY ${WORK} RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "the installed package does not import from the virtual environment (${rc})")
endif()
execute_process(COMMAND ${py} ${SRC}/examples/python/online.py --steps 2000 WORKING_DIRECTORY ${WORK} RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "examples/python/online.py failed with the installed package (${rc})")
endif()
execute_process(COMMAND ${py} -m pytest -q -p no:cacheprovider -rs ${SRC}/python/tests
                WORKING_DIRECTORY ${WORK} RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "the pytest suite failed with the installed package (${rc})")
endif()
