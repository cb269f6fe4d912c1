# Post-build step of x_comm (cmake -P): copies libgloo and the libraries it needs that a host may
# lack (hiredis, ibverbs, libnl) next to the addon, which finds them there first through its
# RPATH $ORIGIN. The GPU machines have no libgloo and nothing can be installed there.
#   -DADDON=<path of x_comm.node>
file(GET_RUNTIME_DEPENDENCIES
  LIBRARIES ${ADDON}
  RESOLVED_DEPENDENCIES_VAR deps
  UNRESOLVED_DEPENDENCIES_VAR missing
  PRE_INCLUDE_REGEXES "gloo" "hiredis" "ibverbs" "libnl"
  PRE_EXCLUDE_REGEXES ".*"
  POST_INCLUDE_REGEXES "gloo" "hiredis" "ibverbs" "libnl"
  POST_EXCLUDE_REGEXES ".*")
if(missing)
  message(FATAL_ERROR "x_comm: unresolved libraries: ${missing}")
endif()
get_filename_component(dir ${ADDON} DIRECTORY)
foreach(dep ${deps})
  file(COPY ${dep} DESTINATION ${dir} FOLLOW_SYMLINK_CHAIN)
endforeach()
list(LENGTH deps n)
message(STATUS "x_comm: bundled ${n} libraries next to the addon")
