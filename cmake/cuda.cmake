# The CUDA backend (backend/cuda): library frugal_cuda, included from the top-level CMakeLists.txt after
# frugal_backend. FRUGAL_CUDA=AUTO builds it when everything it needs is found, ON stops with the list of what is
# missing, OFF leaves it out. Either way one STATUS line says whether the backend is built and, if not, why.
#
# Needs: nvcc (check_language(CUDA)), the CUDA toolkit's cudart, cublasLt and nvrtc, cuDNN (libcudnn + cudnn.h;
# searched in CUDNN_ROOT, the toolkit and the standard paths), NCCL (libnccl + nccl.h; NCCL_ROOT likewise) and the
# header-only cudnn-frontend, which scripts/fetch_cudnn_frontend.sh puts under the build tree at configure time.
#
# Invariants: when the backend is built, FRUGAL_HAVE_CUDA is ON in the including scope (tests/CMakeLists.txt adds
# tests/cuda then) and frugal_cuda carries the PUBLIC definition FRUGAL_HAVE_CUDA=1; when it is not, no CUDA
# language, target or definition exists, so the CPU build is the same as before.

set(FRUGAL_CUDA "AUTO" CACHE STRING
  "Build the CUDA backend: AUTO (when nvcc, cuBLASLt, cuDNN and NCCL are found), ON, OFF")
set_property(CACHE FRUGAL_CUDA PROPERTY STRINGS AUTO ON OFF)
set(FRUGAL_CUDA_ARCHS "90a;100a" CACHE STRING "GPU architectures of the CUDA backend (CMAKE_CUDA_ARCHITECTURES)")
string(TOUPPER "${FRUGAL_CUDA}" frugal_cuda_mode)
set(FRUGAL_HAVE_CUDA OFF)

if(NOT frugal_cuda_mode MATCHES "^(AUTO|ON|OFF)$")
  message(FATAL_ERROR "FRUGAL_CUDA is '${FRUGAL_CUDA}': use AUTO, ON or OFF")
endif()

# Records one missing piece; under ON the configuration stops at the end with all of them.
macro(frugal_cuda_missing what)
  list(APPEND frugal_cuda_missing_list "${what}")
endmacro()

function(frugal_cuda_find)
  set(frugal_cuda_missing_list "")
  include(CheckLanguage)
  check_language(CUDA)
  if(NOT CMAKE_CUDA_COMPILER)
    frugal_cuda_missing("nvcc (the CUDA compiler: put it on PATH or set CUDACXX)")
  endif()
  find_package(CUDAToolkit QUIET)
  if(NOT CUDAToolkit_FOUND)
    frugal_cuda_missing("the CUDA toolkit (set CUDAToolkit_ROOT)")
  else()
    foreach(lib cudart cublasLt nvrtc)
      if(NOT TARGET CUDA::${lib})
        frugal_cuda_missing("lib${lib} of the CUDA toolkit in ${CUDAToolkit_LIBRARY_DIR}")
      endif()
    endforeach()
  endif()
  set(search_roots ${CUDNN_ROOT} $ENV{CUDNN_ROOT} ${CUDAToolkit_LIBRARY_ROOT} ${CUDAToolkit_TARGET_DIR}
    $ENV{CUDA_HOME} /usr/local/cuda)
  find_path(FRUGAL_CUDNN_INCLUDE_DIR cudnn.h HINTS ${search_roots} PATH_SUFFIXES include)
  find_library(FRUGAL_CUDNN_LIBRARY cudnn HINTS ${search_roots} PATH_SUFFIXES lib64 lib lib/x86_64-linux-gnu)
  if(NOT FRUGAL_CUDNN_INCLUDE_DIR OR NOT FRUGAL_CUDNN_LIBRARY)
    frugal_cuda_missing("cuDNN (libcudnn and cudnn.h: set CUDNN_ROOT)")
  endif()
  set(search_roots ${NCCL_ROOT} $ENV{NCCL_ROOT} ${CUDAToolkit_LIBRARY_ROOT} ${CUDAToolkit_TARGET_DIR}
    $ENV{CUDA_HOME} /usr/local/cuda)
  find_path(FRUGAL_NCCL_INCLUDE_DIR nccl.h HINTS ${search_roots} PATH_SUFFIXES include)
  find_library(FRUGAL_NCCL_LIBRARY nccl HINTS ${search_roots} PATH_SUFFIXES lib64 lib lib/x86_64-linux-gnu)
  if(NOT FRUGAL_NCCL_INCLUDE_DIR OR NOT FRUGAL_NCCL_LIBRARY)
    frugal_cuda_missing("NCCL (libnccl and nccl.h: set NCCL_ROOT)")
  endif()
  set(frugal_cuda_missing_list "${frugal_cuda_missing_list}" PARENT_SCOPE)
endfunction()

# cudnn-frontend headers into ${CMAKE_BINARY_DIR}/_deps/cudnn_frontend/include, once per build tree.
function(frugal_cuda_fetch_cudnn_frontend)
  set(dest ${CMAKE_BINARY_DIR}/_deps/cudnn_frontend)
  set(script ${CMAKE_SOURCE_DIR}/scripts/fetch_cudnn_frontend.sh)
  set(FRUGAL_CUDNN_FRONTEND_INCLUDE_DIR "" PARENT_SCOPE)
  if(EXISTS ${dest}/include/cudnn_frontend.h)
    set(FRUGAL_CUDNN_FRONTEND_INCLUDE_DIR ${dest}/include PARENT_SCOPE)
    return()
  endif()
  if(NOT EXISTS ${script})
    return()
  endif()
  execute_process(COMMAND bash ${script} ${dest} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(rc EQUAL 0 AND EXISTS ${dest}/include/cudnn_frontend.h)
    set(FRUGAL_CUDNN_FRONTEND_INCLUDE_DIR ${dest}/include PARENT_SCOPE)
  else()
    string(STRIP "${err}" err)
    frugal_cuda_missing("cudnn-frontend (scripts/fetch_cudnn_frontend.sh ${dest} exited with ${rc}: ${err})")
    set(frugal_cuda_missing_list "${frugal_cuda_missing_list}" PARENT_SCOPE)
  endif()
endfunction()

if(frugal_cuda_mode STREQUAL "OFF")
  message(STATUS "CUDA backend: not built (FRUGAL_CUDA=OFF)")
else()
  frugal_cuda_find()
  if(NOT frugal_cuda_missing_list)
    frugal_cuda_fetch_cudnn_frontend()
  endif()
  if(frugal_cuda_missing_list)
    list(JOIN frugal_cuda_missing_list "; " frugal_cuda_why)
    if(frugal_cuda_mode STREQUAL "ON")
      message(FATAL_ERROR "FRUGAL_CUDA=ON but the CUDA backend cannot be built: missing ${frugal_cuda_why}. "
        "Install what is missing, or configure with -DFRUGAL_CUDA=AUTO or OFF to build without it.")
    endif()
    message(STATUS "CUDA backend: not built (FRUGAL_CUDA=AUTO): missing ${frugal_cuda_why}")
  else()
    set(FRUGAL_HAVE_CUDA ON)
  endif()
endif()

if(FRUGAL_HAVE_CUDA)
  set(CMAKE_CUDA_ARCHITECTURES "${FRUGAL_CUDA_ARCHS}")
  enable_language(CUDA)
  # nvcc 12 and later compile C++20, but CMake before 3.26 has no C++20 entry for nvcc and would stop with "requires
  # the language dialect CUDA20" (the project's CXX standard carries over to CUDA); the entry newer CMake has is
  # supplied here.
  if(NOT "cuda_std_20" IN_LIST CMAKE_CUDA_COMPILE_FEATURES AND CMAKE_CUDA_COMPILER_VERSION VERSION_GREATER_EQUAL 12.0)
    set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")
    set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")
    set(CMAKE_CUDA20_COMPILE_FEATURES cuda_std_20)
    list(APPEND CMAKE_CUDA_COMPILE_FEATURES cuda_std_20)
  endif()
  set(CMAKE_CUDA_STANDARD 20)
  set(CMAKE_CUDA_STANDARD_REQUIRED ON)
  set(CMAKE_CUDA_EXTENSIONS OFF)

  file(GLOB frugal_cuda_sources CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/backend/cuda/*.cu
    ${CMAKE_SOURCE_DIR}/backend/cuda/*.cc)
  # One CUDA runtime in the process: the shared libcudart that cuBLASLt, cuDNN and NCCL use, not CMake's default
  # static copy for targets with .cu files (two runtimes would keep two sets of streams and registered kernels). Set
  # for every target created from here on, since the executables that link frugal_cuda link its runtime too.
  set(CMAKE_CUDA_RUNTIME_LIBRARY Shared)
  add_library(frugal_cuda STATIC ${frugal_cuda_sources})
  # cudnn-frontend is a large header-only library and this file only builds graphs (once per shape): -O1 halves its
  # compile time (122 s against 223 s at -O3, measured on a busy 2-core machine) at no run-time cost.
  set_source_files_properties(${CMAKE_SOURCE_DIR}/backend/cuda/attention_cudnn.cc PROPERTIES COMPILE_OPTIONS -O1)
  # CUDA::nvrtc: cudnn-frontend (backend/cuda/attention_cudnn.cc) compiles some of its engines at run time.
  target_link_libraries(frugal_cuda PUBLIC frugal_core CUDA::cudart CUDA::cublasLt CUDA::nvrtc ${FRUGAL_CUDNN_LIBRARY}
    ${FRUGAL_NCCL_LIBRARY})
  target_include_directories(frugal_cuda SYSTEM PUBLIC ${FRUGAL_CUDNN_INCLUDE_DIR} ${FRUGAL_NCCL_INCLUDE_DIR})
  if(FRUGAL_CUDNN_FRONTEND_INCLUDE_DIR)
    target_include_directories(frugal_cuda SYSTEM PUBLIC ${FRUGAL_CUDNN_FRONTEND_INCLUDE_DIR})
  endif()
  target_compile_definitions(frugal_cuda PUBLIC FRUGAL_HAVE_CUDA=1)
  # The backend registry (backend/backend.cc, backend_for) hands out the CUDA backend, so frugal_backend links it.
  target_link_libraries(frugal_backend PUBLIC frugal_cuda)

  # The directory-wide options (-Wall -Wextra -Werror -march=native ...) are host-compiler options: nvcc would read
  # a bare -Werror as its own flag, which takes an argument. For .cu files they go to the host compiler through
  # -Xcompiler; nvcc's own warnings become errors with -Werror all-warnings when FRUGAL_WERROR is ON.
  get_target_property(frugal_cuda_dir_options frugal_cuda COMPILE_OPTIONS)
  set(frugal_cuda_options "")
  foreach(opt IN LISTS frugal_cuda_dir_options)
    list(APPEND frugal_cuda_options "$<$<NOT:$<COMPILE_LANGUAGE:CUDA>>:${opt}>"
      "$<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=${opt}>")
  endforeach()
  if(FRUGAL_WERROR)
    list(APPEND frugal_cuda_options "$<$<COMPILE_LANGUAGE:CUDA>:-Werror=all-warnings>")
  endif()
  set_target_properties(frugal_cuda PROPERTIES COMPILE_OPTIONS "${frugal_cuda_options}")

  message(STATUS "CUDA backend: built (nvcc ${CMAKE_CUDA_COMPILER_VERSION}, architectures ${CMAKE_CUDA_ARCHITECTURES}, "
    "cuDNN ${FRUGAL_CUDNN_LIBRARY}, NCCL ${FRUGAL_NCCL_LIBRARY})")
endif()
