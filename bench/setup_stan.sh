#!/bin/sh
# Install R and rstan for the Stan rows of bench/bym2.py (Debian/Ubuntu, as root).
# Not a project dependency: the benchmark prints a note row when Rscript or rstan is missing.
set -eu
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends r-base-core r-cran-rstan r-cran-jsonlite
Rscript -e 'library(rstan); cat("rstan", as.character(packageVersion("rstan")), "\n")'
