#!/usr/bin/env bash
# Builds edgecache's OCI image with buildah, without any registry: a FROM
# scratch image holding the static binaries, the host's CA bundle, an
# /etc/passwd with the nobody user, the container configuration and the
# embedding model (models/use-lite, when present). `make image` runs it.
#
# Reproducible: the binaries are built with -trimpath and no build id, and
# every file and the image's creation time carry SOURCE_DATE_EPOCH (default:
# the last commit's time), so the same sources give the same image digest.
#
# Environment:
#   OUT                 the OCI archive written (default bin/edgecache-image.tar)
#   VERSION             stamped into `edgecache version` (default git describe)
#   SOURCE_DATE_EPOCH   timestamp of every file and of the image
#   BUILDAH_ROOT        buildah's storage (default bin/image/storage): kept out
#                       of the host's container storage
#   MODEL_DIR           the model copied in (default models/use-lite)
#   GO                  the go command (default go)
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-bin/edgecache-image.tar}
GO=${GO:-go}
MODEL_DIR=${MODEL_DIR:-models/use-lite}
VERSION=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
export SOURCE_DATE_EPOCH
BUILDAH_ROOT=${BUILDAH_ROOT:-$PWD/bin/image/storage}
CA_BUNDLE=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}

command -v buildah >/dev/null || { echo "image: buildah is not installed (make image installs it)" >&2; exit 1; }
[ -s "$CA_BUNDLE" ] || { echo "image: no CA bundle at $CA_BUNDLE (apt-get install ca-certificates)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rootfs=$work/rootfs
mkdir -p "$rootfs"/usr/local/bin "$rootfs"/etc/ssl/certs "$rootfs"/etc/edgecache \
	"$rootfs"/opt/edgecache/models "$rootfs"/var/lib/edgecache/journal "$rootfs"/tmp

echo "image: building static binaries (version $VERSION)"
CGO_ENABLED=0 "$GO" build -trimpath -buildvcs=false \
	-ldflags "-s -w -buildid= -X github.com/edgecache/edgecache/cmd/internal/app.Version=$VERSION" \
	-o "$rootfs"/usr/local/bin/ ./cmd/edgecache ./cmd/llmsim

cp "$CA_BUNDLE" "$rootfs"/etc/ssl/certs/ca-certificates.crt
cat >"$rootfs"/etc/passwd <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
EOF
cat >"$rootfs"/etc/group <<'EOF'
root:x:0:
nogroup:x:65534:
EOF
cp deploy/config.container.yaml "$rootfs"/etc/edgecache/edgecache.yaml
if [ -f "$MODEL_DIR"/model.json ]; then
	mkdir -p "$rootfs"/opt/edgecache/models/use-lite
	cp "$MODEL_DIR"/model.json "$MODEL_DIR"/vocab.json "$MODEL_DIR"/group1-shard*of7 "$rootfs"/opt/edgecache/models/use-lite/
else
	echo "image: no model in $MODEL_DIR (make model): the semantic tier will use the lexical embedder" >&2
fi
chmod -R u=rwX,go=rX "$rootfs"
chmod 1777 "$rootfs"/tmp
# Fixed timestamps on every file, whatever buildah does with them.
find "$rootfs" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

bh=(buildah --root "$BUILDAH_ROOT" --runroot "$work/run" --storage-driver vfs)
ctr=$("${bh[@]}" from --quiet scratch)
cleanup() { "${bh[@]}" rm "$ctr" >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT
"${bh[@]}" copy --quiet --chown 0:0 "$ctr" "$rootfs"/ /
"${bh[@]}" copy --quiet --chown 65534:65534 "$ctr" "$rootfs"/var/lib/edgecache /var/lib/edgecache
"${bh[@]}" config \
	--user 65534:65534 \
	--workingdir /var/lib/edgecache \
	--entrypoint '["/usr/local/bin/edgecache"]' \
	--cmd '' \
	--env EDGECACHE_CONFIG=/etc/edgecache/edgecache.yaml \
	--env EDGECACHE_ADMIN_LISTEN=0.0.0.0:9090 \
	--env EDGECACHE_MODEL_DIR=/opt/edgecache/models/use-lite \
	--env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
	--port 8080 --port 9090 \
	--label org.opencontainers.image.title=edgecache \
	--label org.opencontainers.image.version="$VERSION" \
	--label org.opencontainers.image.source=https://github.com/edgecache/edgecache \
	"$ctr"
mkdir -p "$(dirname "$OUT")"
rm -f "$OUT"
"${bh[@]}" commit --quiet --format oci --timestamp "$SOURCE_DATE_EPOCH" --rm "$ctr" "oci-archive:$work/image.tar:edgecache:$VERSION" >/dev/null
trap 'rm -rf "$work"' EXIT
# The image (its manifest digest) is reproducible already; repacking the
# archive with fixed names, order and times makes the file itself so.
mkdir "$work/oci"
tar -xf "$work/image.tar" -C "$work/oci"
tar --sort=name --mtime="@$SOURCE_DATE_EPOCH" --owner=0 --group=0 --numeric-owner --format=posix \
	--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime -cf "$OUT" -C "$work/oci" .
echo "image: $OUT (edgecache:$VERSION, SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH)"
