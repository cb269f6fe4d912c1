# Turns a binary file into a header holding it as a byte array (run with cmake -P).
file(READ ${IN} hex HEX)
string(LENGTH "${hex}" n)
math(EXPR bytes "${n} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," body "${hex}")
file(WRITE ${OUT} "// Generated from ${IN}; do not edit.\n#pragma once\n#define X_CORE_KERNEL_ARCHS \"${ARCHS}\"\nalignas(64) static const unsigned char ${SYMBOL}[${bytes}] = {${body}};\n")
