# Shared settings for x's Node-API addons (included by native/<package>/CMakeLists.txt).
#
# cmake-js provides CMAKE_JS_INC / CMAKE_JS_SRC / CMAKE_JS_LIB (node-api-headers, no download).
# The package's build script passes NODE_ADDON_API_DIR (node-addon-api's include directory).
set(CMAKE_CXX_STANDARD 20)
set(CMAKE_CXX_STANDARD_REQUIRED ON)
set(CMAKE_POSITION_INDEPENDENT_CODE ON)
if(NOT CMAKE_BUILD_TYPE)
  set(CMAKE_BUILD_TYPE Release)
endif()

set(X_NATIVE_INCLUDE ${CMAKE_CURRENT_LIST_DIR}/../include)

# Adds a Node-API addon target with x's include paths, warnings and N-API version.
function(x_add_addon target)
  add_library(${target} SHARED ${ARGN} ${CMAKE_JS_SRC})
  set_target_properties(${target} PROPERTIES PREFIX "" SUFFIX ".node")
  target_include_directories(${target} PRIVATE ${CMAKE_JS_INC} ${NODE_ADDON_API_DIR} ${X_NATIVE_INCLUDE})
  # NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS: a JS call into the addon that fails while its worker
  # thread is being terminated cannot throw into JS; without it node-addon-api rethrows in C++ and
  # the process aborts (std::terminate).
  target_compile_definitions(${target} PRIVATE NAPI_VERSION=8 NAPI_CPP_EXCEPTIONS NODE_ADDON_API_DISABLE_DEPRECATED
    NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wno-unused-parameter -fvisibility=hidden)
  target_link_libraries(${target} PRIVATE ${CMAKE_JS_LIB} ${CMAKE_DL_LIBS} pthread)
  # Node dlcloses a worker thread's addons when the worker's environment is freed, while native
  # threads started from the addon (CPU streams, sleep/wake threads, kernel thread pools) may still
  # run its code or return into it: that unmapped the code under them (SIGSEGV). A NODELETE object
  # stays mapped until the process exits.
  target_link_options(${target} PRIVATE -Wl,-z,nodelete)
endfunction()

# CUDA kernels are optional: when nvcc is found (and X_WITH_CUDA is not OFF) they are compiled to a
# fatbin for sm_80, sm_90a and PTX (compute_90, JIT-compiled by newer drivers) and embedded in the
# addon, which loads them with cuModuleLoadData. No CUDA runtime is linked.
option(X_WITH_CUDA "Compile CUDA kernels when nvcc is available" ON)
set(X_CUDA_ARCHS "sm_80,sm_90a,compute_90")
set(X_HAVE_CUDA OFF)
if(X_WITH_CUDA)
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    set(X_HAVE_CUDA ON)
    message(STATUS "x: CUDA kernels enabled (${CMAKE_CUDA_COMPILER}; ${X_CUDA_ARCHS})")
  else()
    message(STATUS "x: nvcc not found; building CPU-only")
  endif()
endif()

# x_embed_fatbin(<target> <symbol> <source.cu>): compiles source.cu to a fatbin and embeds it in
# <target> as `extern const unsigned char <symbol>[]` via a generated header <symbol>.h ... and
# defines X_HAVE_CUDA_KERNELS=1 on the target.
function(x_embed_fatbin target symbol header source)
  set(fatbin ${CMAKE_CURRENT_BINARY_DIR}/${symbol}.fatbin)
  set(gen ${CMAKE_CURRENT_BINARY_DIR}/gen/${header})
  add_custom_command(
    OUTPUT ${fatbin}
    COMMAND ${CMAKE_CUDA_COMPILER} -fatbin -O3 -std=c++17
      -gencode=arch=compute_80,code=sm_80
      -gencode=arch=compute_90a,code=sm_90a
      -gencode=arch=compute_90,code=compute_90
      -o ${fatbin} ${source}
    DEPENDS ${source}
    COMMENT "nvcc -fatbin ${source}")
  add_custom_command(
    OUTPUT ${gen}
    COMMAND ${CMAKE_COMMAND} -DIN=${fatbin} -DOUT=${gen} -DSYMBOL=${symbol} -DARCHS=${X_CUDA_ARCHS}
      -P ${X_NATIVE_CMAKE_DIR}/embed.cmake
    DEPENDS ${fatbin} ${X_NATIVE_CMAKE_DIR}/embed.cmake)
  target_sources(${target} PRIVATE ${gen})
  target_include_directories(${target} PRIVATE ${CMAKE_CURRENT_BINARY_DIR}/gen)
  target_compile_definitions(${target} PRIVATE X_HAVE_CUDA_KERNELS=1)
endfunction()
set(X_NATIVE_CMAKE_DIR ${CMAKE_CURRENT_LIST_DIR})
