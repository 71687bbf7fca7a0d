# Checked before enable_language(CUDA), so a machine without the toolkit gets one clear line instead
# of CMake's compiler-detection failure. Included by native/cmake/visplay_cuda.cmake (the addon) and
# native/kernels/CMakeLists.txt (the standalone kernels project).
include(CheckLanguage)
check_language(CUDA)
if (NOT CMAKE_CUDA_COMPILER)
    message(FATAL_ERROR "visplay: VISPLAY_CUDA=ON but no CUDA compiler (nvcc) was found. Install the CUDA "
                        "toolkit and put nvcc on PATH (e.g. /usr/local/cuda/bin), or set CUDACXX / "
                        "-DCMAKE_CUDA_COMPILER=/path/to/nvcc; or build without VISPLAY_CUDA.")
endif()
