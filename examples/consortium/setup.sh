#!/usr/bin/env bash
# Make three site identities, a pre-shared key, and one config file per site.
# Each site would run this part on its own machine and send only its peer ID
# to the others; here all three live in this folder.
set -euo pipefail
cd "$(dirname "$0")"
dflmoe() { node ../../packages/cli/bin/dflmoe.js "$@"; }
dflmoe keygen --psk swarm.key --force
declare -A ids
for s in site-a site-b site-c; do ids[$s]=$(dflmoe keygen --out "$s.key" --force 2>/dev/null); done
i=0
for s in site-a site-b site-c; do
  sed -e "s/\"SITE/\"$s/g; s#runs/SITE#runs/$s#; s/SITE.key/$s.key/; s/PORT/$((9101 + i))/; s/INDEX/$i/" \
      -e "s/PEER_site-a/${ids[site-a]}/; s/PEER_site-b/${ids[site-b]}/; s/PEER_site-c/${ids[site-c]}/" \
      site.template.json > "$s.json"
  i=$((i + 1))
done
echo "wrote site-a.json site-b.json site-c.json; start each in its own terminal:"
for s in site-a site-b site-c; do echo "  npx dflmoe peer --config examples/consortium/$s.json"; done
