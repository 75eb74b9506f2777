# Fit bench/bym2.stan with rstan for bench/bym2.py:
#   Rscript bench/bym2_stan.R MODEL.stan DATA.json OUTDIR DRAWS SEED TARGET_ACCEPT
# Compiles (no cache: compilation is part of the end-to-end time), samples 2 chains on
# 2 cores with tune = draws, and writes OUTDIR/draws.csv (hyperparameters, post-warm-up),
# OUTDIR/stats.csv (n_leapfrog, divergent per iteration, warm-up included) and
# OUTDIR/times.json (compile and sampling seconds, and the chains' own sampling time). ESS and R-hat are computed in Python (ArviZ), as for the other rows.
suppressPackageStartupMessages({library(rstan); library(jsonlite)})
args <- commandArgs(trailingOnly = TRUE)
model_file <- args[1]; data_file <- args[2]; out <- args[3]
draws <- as.integer(args[4]); seed <- as.integer(args[5]); delta <- as.numeric(args[6])
rstan_options(auto_write = FALSE)
if (!file.exists(rstan_options("boost_lib")) && file.exists("/usr/include/boost"))
  rstan_options(boost_lib = "/usr/include")  # Debian's r-cran-bh uses the system Boost
data <- fromJSON(data_file, simplifyVector = TRUE)
for (name in c("conn", "comp_start", "comp_size", "node1", "node2", "scale"))
  data[[name]] <- array(data[[name]], dim = length(data[[name]]))  # length-1/0 as arrays
t0 <- Sys.time()
model <- stan_model(model_file)
t1 <- Sys.time()
pars <- c("beta0", "beta1", "sigma", "rho")
fit <- sampling(model, data = data, chains = 2, cores = 2, iter = 2 * draws, warmup = draws,
                seed = seed, pars = pars, control = list(adapt_delta = delta), refresh = 0)
t2 <- Sys.time()
arr <- as.array(fit, pars = pars)  # iterations x chains x parameters
rows <- do.call(rbind, lapply(seq_len(dim(arr)[2]), function(ch)
  data.frame(chain = ch - 1, draw = seq_len(dim(arr)[1]) - 1, arr[, ch, ])))
write.csv(rows, file.path(out, "draws.csv"), row.names = FALSE)
sp <- get_sampler_params(fit, inc_warmup = TRUE)
stats <- do.call(rbind, lapply(seq_along(sp), function(ch)
  data.frame(chain = ch - 1, iteration = seq_len(nrow(sp[[ch]])) - 1,
             warmup = seq_len(nrow(sp[[ch]])) <= draws,
             n_leapfrog = sp[[ch]][, "n_leapfrog__"], divergent = sp[[ch]][, "divergent__"])))
write.csv(stats, file.path(out, "stats.csv"), row.names = FALSE)
write(toJSON(list(compile_s = as.numeric(difftime(t1, t0, units = "secs")),
                  sample_s = as.numeric(difftime(t2, t1, units = "secs")),
                  chain_s = sum(get_elapsed_time(fit)),  # in-sampler time, all chains
                  rstan = as.character(packageVersion("rstan"))), auto_unbox = TRUE),
      file.path(out, "times.json"))
