#!/usr/bin/env bash
# Template "minimal": busybox-static and nothing else; envd and the accounts
# are added by wrenn-image. No network access and no mount needed.
# Run through images/build.sh --templates minimal.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
wrenn_template_env

"$WRENN_IMAGE_TOOL" stage-minimal -busybox "$WRENN_BUSYBOX" -dir "$WRENN_ROOT"
dpkg-query -W -f='${Package} ${Version}\n' busybox-static >>"$WRENN_PACKAGES_OUT"
wrenn_finish_options size_mib=256 shell=/bin/sh
