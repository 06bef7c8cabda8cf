#!/usr/bin/env bash
# The from-source Dockerfiles (replica.Dockerfile, operator.Dockerfile) cannot be built on a machine without a
# registry; their *.local.Dockerfile twins are what deploy/build-images.sh builds and the smoke test runs. This
# keeps the two of each pair describing the same image: the runtime stage's USER, ENV, EXPOSE, STOPSIGNAL,
# ENTRYPOINT and CMD must be identical, and both must copy the binaries to /usr/local/bin.
set -euo pipefail
cd "$(dirname "$0")/docker"

# The instructions of the last stage that shape the running container, one per line, continuations joined.
runtime() {
    awk '
        { line = line $0 }
        /\\$/ { sub(/\\$/, "", line); next }
        { print line; line = "" }
    ' "$1" | awk '
        /^FROM / { stage = "" ; next }
        /^(USER|ENV|EXPOSE|STOPSIGNAL|ENTRYPOINT|CMD) / { gsub(/[ \t]+/, " "); stage = stage $0 "\n" }
        END { printf "%s", stage }
    '
}

status=0
for image in replica operator; do
    source="$image.Dockerfile" local="$image.local.Dockerfile"
    if ! diff <(runtime "$source") <(runtime "$local") >/dev/null; then
        echo "deploy/docker: $source and $local describe different containers:" >&2
        diff <(runtime "$source") <(runtime "$local") >&2 || true
        status=1
    fi
    for file in "$source" "$local"; do
        grep -Eq '^COPY .* /usr/local/bin/$' "$file" || { echo "deploy/docker/$file: no COPY to /usr/local/bin/" >&2; status=1; }
    done
    [ $status != 0 ] || echo "$source = $local: $(runtime "$local" | wc -l) runtime instructions agree"
done
exit $status
