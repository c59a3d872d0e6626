#!/usr/bin/env bash
# Publish the searchers of ROOT's LATEST version to DEST (a bucket the app downloads from):
#   DEST/<version>/text_searcher.tflite, image_searcher.tflite, searcher_report.json
#   DEST/LATEST   (written last: a client that reads LATEST always finds a complete version)
#
#   deploy/schedule/publish_searcher.sh ROOT DEST
# ROOT and DEST may be local folders or gs:// URLs (gcloud storage is used for gs://).
set -euo pipefail
ROOT="${1:?usage: publish_searcher.sh ROOT DEST}"
DEST="${2:?usage: publish_searcher.sh ROOT DEST}"
DRY_RUN="${DRY_RUN:-0}"

is_gs() { [[ "$1" == gs://* ]]; }
run() { echo "+ $*" >&2; if [ "$DRY_RUN" != 1 ]; then "$@"; fi; }

if is_gs "$ROOT"; then version="$(gcloud storage cat "$ROOT/LATEST")"; else version="$(cat "$ROOT/LATEST")"; fi
version="${version//[$'\r\n ']/}"
if [[ ! "$version" =~ ^v-[0-9]{8}-[0-9]{6}-[0-9a-f]+$ ]]; then
  echo "publish_searcher: $ROOT/LATEST holds '$version', not a version name" >&2
  exit 1
fi
src="$ROOT/$version/searchers"

if is_gs "$DEST"; then
  run gcloud storage cp "$src/*" "$DEST/$version/"
  tmp="$(mktemp)"; echo "$version" > "$tmp"
  run gcloud storage cp "$tmp" "$DEST/LATEST"   # one object write: atomic for readers
  rm -f "$tmp"
else
  run mkdir -p "$DEST/$version"
  run cp -r "$src/." "$DEST/$version/"
  if [ "$DRY_RUN" != 1 ]; then
    echo "$version" > "$DEST/.LATEST.tmp.$$" && mv -f "$DEST/.LATEST.tmp.$$" "$DEST/LATEST"  # rename: atomic
  fi
fi
echo "published $version -> $DEST" >&2
