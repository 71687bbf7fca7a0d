# VISPLAY_CUDA=ON: find what ggml's CUDA backend needs before the vendored tree looks for it, so a
# machine that lacks a piece gets one line naming it instead of CMake's compiler-detection errors.
#
#   nvcc + CUDA runtime   the system toolkit (nvcc on PATH, CUDACXX, or -DCMAKE_CUDA_COMPILER)
#   cuBLAS                the toolkit's own, else a Python wheel: nvidia-cublas (CUDA 13 wheels install
#                         site-packages/nvidia/cu13/{lib,include}, CUDA 12 wheels
#                         site-packages/nvidia/cublas/{lib,include}); -DVISPLAY_CUBLAS_DIR=DIR (or the
#                         env var of that name) names a folder with lib/ and include/ directly
#   architectures         -DCMAKE_CUDA_ARCHITECTURES, else $VISPLAY_CUDA_ARCHITECTURES, else "native"
#                         when nvidia-smi sees a GPU, else 90 (Hopper: H100, H200). One architecture
#                         keeps ggml-cuda's build to one device pass per source.
#   libcuda (driver)      ggml's VMM memory pool calls the driver API; a machine without the driver
#                         library (a build box without a GPU and without the toolkit's stubs) builds
#                         with GGML_CUDA_NO_VMM, ggml's plain pool, and says so.

include(${CMAKE_CURRENT_LIST_DIR}/visplay_nvcc.cmake)

if (NOT DEFINED CMAKE_CUDA_ARCHITECTURES OR CMAKE_CUDA_ARCHITECTURES STREQUAL "")
    if (DEFINED ENV{VISPLAY_CUDA_ARCHITECTURES} AND NOT "$ENV{VISPLAY_CUDA_ARCHITECTURES}" STREQUAL "")
        set(CMAKE_CUDA_ARCHITECTURES "$ENV{VISPLAY_CUDA_ARCHITECTURES}")
    else()
        execute_process(COMMAND nvidia-smi --query-gpu=compute_cap --format=csv,noheader
                        RESULT_VARIABLE _visplay_smi_rc OUTPUT_VARIABLE _visplay_smi_out ERROR_QUIET
                        OUTPUT_STRIP_TRAILING_WHITESPACE)
        if (_visplay_smi_rc EQUAL 0 AND _visplay_smi_out MATCHES "^[0-9]")
            set(CMAKE_CUDA_ARCHITECTURES native)
        else()
            set(CMAKE_CUDA_ARCHITECTURES 90)
        endif()
    endif()
endif()

find_package(CUDAToolkit)
if (NOT CUDAToolkit_FOUND)
    message(FATAL_ERROR "visplay: VISPLAY_CUDA=ON but the CUDA toolkit (headers and the CUDA runtime "
                        "library) was not found next to ${CMAKE_CUDA_COMPILER}. Install the CUDA toolkit, or "
                        "set CUDAToolkit_ROOT to it.")
endif()

# cuBLAS: the toolkit's, else a wheel's. FindCUDAToolkit (which ggml calls again) keeps a library
# path already in the cache, so presetting CUDA_cublas_LIBRARY / CUDA_cublasLt_LIBRARY points its
# CUDA::cublas target at the wheel; the wheel's headers go on ggml-cuda (visplay_cuda_after_ggml).
set(VISPLAY_CUBLAS_DIR "$ENV{VISPLAY_CUBLAS_DIR}" CACHE PATH "folder with cuBLAS's lib/ and include/ (e.g. a wheel's site-packages/nvidia/cu13)")
set(_visplay_cublas_roots "")
if (VISPLAY_CUBLAS_DIR)
    list(APPEND _visplay_cublas_roots ${VISPLAY_CUBLAS_DIR})
endif()
find_package(Python3 COMPONENTS Interpreter QUIET)
if (Python3_Interpreter_FOUND)
    # Every site-packages/nvidia folder the interpreter sees (a venv's first).
    execute_process(COMMAND ${Python3_EXECUTABLE} -c
                    "import sys,os\nfor p in sys.path:\n  d=os.path.join(p,'nvidia')\n  print(d) if os.path.isdir(d) else None"
                    OUTPUT_VARIABLE _visplay_nvidia_dirs ERROR_QUIET OUTPUT_STRIP_TRAILING_WHITESPACE)
    string(REPLACE "\n" ";" _visplay_nvidia_dirs "${_visplay_nvidia_dirs}")
    foreach (d IN LISTS _visplay_nvidia_dirs)
        list(APPEND _visplay_cublas_roots "${d}/cu${CUDAToolkit_VERSION_MAJOR}" "${d}/cublas")
    endforeach()
endif()

find_library(_visplay_cublas_toolkit NAMES cublas HINTS ${CUDAToolkit_LIBRARY_DIR} NO_CACHE)
find_path(_visplay_cublas_toolkit_h cublas_v2.h HINTS ${CUDAToolkit_INCLUDE_DIRS} NO_CACHE)
set(VISPLAY_CUBLAS_INCLUDE "")
if (_visplay_cublas_toolkit AND _visplay_cublas_toolkit_h AND NOT VISPLAY_CUBLAS_DIR)
    message(STATUS "visplay: cuBLAS from the CUDA toolkit (${_visplay_cublas_toolkit})")
else()
    set(_visplay_found "")
    foreach (root IN LISTS _visplay_cublas_roots)
        # Wheels ship only the versioned sonames (libcublas.so.13), no libcublas.so link.
        file(GLOB _visplay_lib "${root}/lib/libcublas.so.${CUDAToolkit_VERSION_MAJOR}" "${root}/lib/libcublas.so")
        file(GLOB _visplay_lt "${root}/lib/libcublasLt.so.${CUDAToolkit_VERSION_MAJOR}" "${root}/lib/libcublasLt.so")
        if (_visplay_lib AND _visplay_lt AND EXISTS "${root}/include/cublas_v2.h")
            list(GET _visplay_lib 0 _visplay_lib)
            list(GET _visplay_lt 0 _visplay_lt)
            set(CUDA_cublas_LIBRARY "${_visplay_lib}" CACHE FILEPATH "cuBLAS" FORCE)
            set(CUDA_cublasLt_LIBRARY "${_visplay_lt}" CACHE FILEPATH "cuBLASLt" FORCE)
            set(VISPLAY_CUBLAS_INCLUDE "${root}/include")
            set(_visplay_found "${root}")
            break()
        endif()
    endforeach()
    if (NOT _visplay_found)
        if (NOT _visplay_cublas_roots)
            set(_visplay_cublas_roots "none: python3 has no site-packages/nvidia folder")
        endif()
        message(FATAL_ERROR "visplay: VISPLAY_CUDA=ON but cuBLAS was not found: not in the CUDA toolkit "
                            "(${CUDAToolkit_LIBRARY_DIR}) and not in a Python wheel (looked in: "
                            "${_visplay_cublas_roots}). Install the toolkit's cuBLAS, or `pip install "
                            "nvidia-cublas` (CUDA ${CUDAToolkit_VERSION_MAJOR}), or set VISPLAY_CUBLAS_DIR to a "
                            "folder holding lib/libcublas.so* and include/cublas_v2.h.")
    endif()
    message(STATUS "visplay: cuBLAS from ${_visplay_found} (${CUDA_cublas_LIBRARY}); at run time it must be "
                   "found too (the build's RPATH names it; elsewhere set LD_LIBRARY_PATH)")
endif()

if (NOT CUDA_cuda_driver_LIBRARY)
    set(GGML_CUDA_NO_VMM ON CACHE BOOL "" FORCE)
    message(STATUS "visplay: no libcuda (driver library or the toolkit's stubs) here: building ggml-cuda "
                   "with GGML_CUDA_NO_VMM (its plain memory pool instead of the virtual-memory one)")
endif()
message(STATUS "visplay: CUDA ${CUDAToolkit_VERSION}, CMAKE_CUDA_ARCHITECTURES=${CMAKE_CUDA_ARCHITECTURES}")

# Called after the vendored tree is added: the wheel's cuBLAS headers for ggml-cuda's sources.
function(visplay_cuda_after_ggml)
    if (VISPLAY_CUBLAS_INCLUDE)
        target_include_directories(ggml-cuda PRIVATE "${VISPLAY_CUBLAS_INCLUDE}")
    endif()
endfunction()
