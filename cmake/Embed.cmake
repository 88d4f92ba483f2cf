# Writes OUTPUT, a C++ file defining cellroute::defaults::NAME() for each NAME=FILE in FILES
# (separated by |),
# each returning the file's bytes. Run with cmake -P at build time, so editing an example
# rebuilds the library.
string(REPLACE "|" ";" FILES "${FILES}")
set(_out "// Generated from examples/ by cmake/Embed.cmake. Do not edit.\n")
string(APPEND _out "#include \"cellroute/router.h\"\n\nnamespace cellroute::defaults {\n")
foreach(_pair IN LISTS FILES)
  string(REPLACE "=" ";" _pair "${_pair}")
  list(GET _pair 0 _name)
  list(GET _pair 1 _file)
  file(READ "${_file}" _hex HEX)
  string(LENGTH "${_hex}" _len)
  math(EXPR _bytes "${_len} / 2")
  string(REGEX REPLACE "([0-9a-f][0-9a-f])" "'\\\\x\\1'," _chars "${_hex}")
  string(APPEND _out "namespace {\nconstexpr char k${_name}[] = {${_chars} '\\0'};\n}  // namespace\n")
  string(APPEND _out "std::string_view ${_name}() noexcept { return {k${_name}, ${_bytes}}; }\n")
endforeach()
string(APPEND _out "}  // namespace cellroute::defaults\n")
file(WRITE "${OUTPUT}.tmp" "${_out}")
file(COPY_FILE "${OUTPUT}.tmp" "${OUTPUT}" ONLY_IF_DIFFERENT)
