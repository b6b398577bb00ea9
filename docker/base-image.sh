#!/usr/bin/env bash
# Makes the local image `debian:bookworm-slim` when it is missing, for machines that can
# pull no image: a minimal Debian root file system from debootstrap, imported into Docker.
# Operators who can pull never need this: the same name is Docker Hub's image, and
# docker/Dockerfile starts from it either way. Idempotent: does nothing if the image exists.
# Needs root (debootstrap) and the Debian mirror that apt already uses.
#
#   docker/base-image.sh            # about half a minute on this project's 2-core machines
set -euo pipefail
IMAGE=debian:bookworm-slim
SUITE=bookworm

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "$IMAGE is present"
    exit 0
fi

if ! command -v debootstrap >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
fi

# The mirror apt already uses for $SUITE itself (not -security or -updates, whose URIs also
# contain "debian"): deb822 stanzas in sources.list.d first, then one-line `deb` entries.
mirror_deb822() {
    local f
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        awk -v suite="$SUITE" 'BEGIN { RS = ""; FS = "\n" }
            { uri = ""; hit = 0; deb = 0
              for (i = 1; i <= NF; i++) {
                  line = $i; if (line ~ /^[ \t]*#/) continue
                  if (line ~ /^Types:/ && line ~ /[ \t]deb([ \t]|$)/) deb = 1
                  if (line ~ /^URIs:/) { split(line, u, /[ \t]+/); uri = u[2] }
                  if (line ~ /^Suites:/) { n = split(line, s, /[ \t]+/)
                      for (j = 2; j <= n; j++) if (s[j] == suite) hit = 1 }
              }
              if (deb && hit && uri != "") { print uri; exit } }' "$f"
    done
}
mirror_classic() {
    cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
        awk -v suite="$SUITE" '$1 == "deb" { i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                                             if ($(i + 1) == suite) { print $i; exit } }'
}
MIRROR=$(mirror_deb822 | head -n1)
[ -n "$MIRROR" ] || MIRROR=$(mirror_classic | head -n1)
MIRROR=${MIRROR:-http://deb.debian.org/debian}

ROOTFS=$(mktemp -d /var/tmp/tally-rootfs.XXXXXX)
LOG=$(mktemp /var/tmp/tally-debootstrap.XXXXXX.log)
# The root file system is only needed until the import; remove it however the script ends.
trap 'rm -rf "$ROOTFS" "$LOG"' EXIT

echo "debootstrap --variant=minbase $SUITE from $MIRROR"
if ! debootstrap --variant=minbase "$SUITE" "$ROOTFS" "$MIRROR" >"$LOG" 2>&1; then
    tail -n 30 "$LOG" >&2
    exit 1
fi
# Not needed at run time (the official slim image leaves them out too): package lists,
# apt's caches, documentation.
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin "$ROOTFS"/var/cache/apt/archives/*.deb \
    "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/info/*
# The configuration Docker Hub's image has (`docker import` alone sets none).
tar -C "$ROOTFS" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["bash"]' \
    --message "debootstrap --variant=minbase $SUITE $MIRROR" \
    - "$IMAGE" >/dev/null
echo "$IMAGE imported ($(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1 / 1e6}'))"
