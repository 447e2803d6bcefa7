# Are the Debian packages of group "build" in .ci/debian-packages.txt installed?
#
# Included by CMakeLists.txt before project(), so a machine without them gets ONE error
# that names every missing package and the apt-get command, instead of the first
# pkg_check_modules (or compiler check) that CMake trips on.  Also runs on its own:
#   cmake -P .ci/check-debian-packages.cmake
# Every check looks at the environment only (PATH, PKG_CONFIG_PATH/PKG_CONFIG_LIBDIR, CXX),
# so a test can simulate a machine without the packages.

set(_cmio_list "${CMAKE_CURRENT_LIST_DIR}/debian-packages.txt")
file(STRINGS "${_cmio_list}" _cmio_lines)

function(_cmio_find_tool name out)
  # Not cached: the next configure of the same build directory looks again.
  unset(_cmio_tool CACHE)
  find_program(_cmio_tool NAMES "${name}")
  if(_cmio_tool)
    set(${out} "${_cmio_tool}" PARENT_SCOPE)
  else()
    set(${out} "" PARENT_SCOPE)
  endif()
  unset(_cmio_tool CACHE)
endfunction()

_cmio_find_tool(pkg-config _cmio_pkgconfig)
set(_cmio_missing "")
set(_cmio_why "")
foreach(_line IN LISTS _cmio_lines)
  string(REGEX REPLACE "#.*" "" _line "${_line}")
  string(STRIP "${_line}" _line)
  if(_line STREQUAL "")
    continue()
  endif()
  string(REGEX REPLACE "[ \t]+" ";" _fields "${_line}")
  list(LENGTH _fields _n)
  if(_n LESS 3)
    message(FATAL_ERROR "${_cmio_list}: cannot read line '${_line}' (PACKAGE GROUP PRESENT-WHEN)")
  endif()
  list(GET _fields 0 _pkg)
  list(GET _fields 1 _group)
  list(GET _fields 2 _checks)
  if(NOT _group STREQUAL "build")
    continue()
  endif()
  string(REPLACE "," ";" _checks "${_checks}")
  set(_absent "")
  set(_have_pc_check FALSE)
  foreach(_c IN LISTS _checks)
    if(_c MATCHES "^pc:")
      set(_have_pc_check TRUE)
    endif()
  endforeach()
  foreach(_c IN LISTS _checks)
    if(_c MATCHES "^tool:(.+)$")
      set(_tool "${CMAKE_MATCH_1}")
      if(_tool STREQUAL "c++" AND DEFINED ENV{CXX} AND NOT "$ENV{CXX}" STREQUAL "")
        set(_tool "$ENV{CXX}")  # the compiler CMake will use
      endif()
      _cmio_find_tool("${_tool}" _found)
      if(NOT _found)
        list(APPEND _absent "program ${_tool}")
      endif()
    elseif(_c MATCHES "^pc:(.+)$")
      if(_cmio_pkgconfig)
        execute_process(
          COMMAND "${_cmio_pkgconfig}" --exists "${CMAKE_MATCH_1}"
          RESULT_VARIABLE _rc OUTPUT_QUIET ERROR_QUIET)
        if(NOT _rc EQUAL 0)
          list(APPEND _absent "pkg-config module ${CMAKE_MATCH_1}")
        endif()
      endif()
    elseif(_c MATCHES "^header:(.+)$")
      # Without pkg-config the module cannot be asked for: look for the header instead.
      if(NOT _cmio_pkgconfig OR NOT _have_pc_check)
        # Debian puts some headers in the multiarch directory (/usr/include/x86_64-linux-gnu).
        file(GLOB _hits "/usr/include/${CMAKE_MATCH_1}" "/usr/include/*/${CMAKE_MATCH_1}"
             "/usr/local/include/${CMAKE_MATCH_1}")
        if(NOT _hits)
          list(APPEND _absent "header ${CMAKE_MATCH_1}")
        endif()
      endif()
    else()
      message(FATAL_ERROR "${_cmio_list}: unknown check '${_c}' for ${_pkg} (tool:, pc:, header:)")
    endif()
  endforeach()
  if(_absent)
    list(APPEND _cmio_missing "${_pkg}")
    list(JOIN _absent ", " _absent_text)
    string(APPEND _cmio_why "\n    ${_pkg}  (no ${_absent_text})")
  endif()
endforeach()

if(_cmio_missing)
  list(JOIN _cmio_missing " " _cmio_missing_text)
  message(FATAL_ERROR
    "cvmfs-modelio cannot be built: Debian packages missing:${_cmio_why}\n"
    "Install them (as root):\n"
    "    apt-get install -y ${_cmio_missing_text}\n"
    "or install everything the README's commands need: .ci/install-debian-packages")
endif()
if(CMAKE_SCRIPT_MODE_FILE)
  message(STATUS "cvmfs-modelio: every Debian build package is installed")
endif()
