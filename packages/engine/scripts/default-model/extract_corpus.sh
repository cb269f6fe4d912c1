#!/usr/bin/env bash
# Writes the King James Bible as plain text, the training corpus of x's built-in default model.
#
# The text comes from Debian's bible-kjv-text package (read with the `bible` program of
# bible-kjv): `apt-get install -y bible-kjv bible-kjv-text`. Output: one verse per line, without
# verse references; a blank line between chapters (the trainer treats a chapter as a document).
#
# Usage: extract_corpus.sh [OUT]   (default: packages/engine/models/.corpus/kjv.txt, git-ignored)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out=$(realpath -m "${1:-"$here/../../models/.corpus/kjv.txt"}")

if ! command -v bible >/dev/null 2>&1 || [ ! -e /usr/lib/bible.data ]; then
  echo "extract_corpus.sh: the KJV text is not installed." >&2
  echo "  Install it with: apt-get install -y bible-kjv bible-kjv-text" >&2
  exit 1
fi

mkdir -p "$(dirname "$out")"
tmp="$out.tmp.$$"
trap 'rm -f "$tmp"' EXIT

# -f turns pretty-printing off: one line per verse, "Ge1:1 In the beginning ...". The reference is
# the first field; a new book+chapter (everything before the last ":") starts a new paragraph.
bible -f "Gen1:1-Rev22:21" | awk '
  {
    ref = $1
    chapter = substr(ref, 1, index(ref, ":") - 1)
    sub(/^[^ ]+ /, "")
    if (NR > 1 && chapter != last) print ""
    last = chapter
    print
    verses++
  }
  END { if (verses != 31102) { print "expected 31102 verses, read " verses > "/dev/stderr"; exit 1 } }
' > "$tmp"

mv "$tmp" "$out"
trap - EXIT
echo "wrote $out: $(grep -c . "$out") verses, $(wc -c < "$out") bytes, sha256 $(sha256sum "$out" | cut -c1-16)"
