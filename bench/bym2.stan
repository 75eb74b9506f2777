// BYM2 Poisson model for bench/bym2.py: Morris et al. (2019), "Bayesian hierarchical
// spatial models: Implementing the Besag York Mollie model in Stan" (pairwise-difference
// ICAR, soft sum-to-zero constraint), with each connected component scaled and constrained
// on its own and isolated areas unstructured only, as the product's BYM2 does. Priors are
// data so that they are the very ones of the PyMC models. Stan 2.21 syntax (rstan 2.21).
data {
  int<lower=1> N;
  int<lower=0> N_conn;                    // areas in components of 2 or more
  int<lower=1, upper=N> conn[N_conn];     // their indices, grouped by component
  int<lower=0> K;                         // such components
  int<lower=1> comp_start[K];             // positions in conn
  int<lower=2> comp_size[K];
  int<lower=0> N_edges;
  int<lower=1, upper=N_conn> node1[N_edges];  // positions in conn
  int<lower=1, upper=N_conn> node2[N_edges];
  vector<lower=0>[N_conn] scale;          // ICAR scaling factor of the area's component
  int<lower=0> y[N];
  vector<lower=0>[N] E;
  vector[N] x;
  vector[2] prior_beta0;                  // normal(mu, sigma)
  vector[2] prior_beta1;
  real<lower=0> prior_sigma;              // half-normal(0, sigma)
  vector<lower=0>[2] prior_rho;           // beta(a, b)
}
transformed data {
  vector[N] log_E = log(E);
  vector[N_conn] inv_sqrt_scale = inv_sqrt(scale);
}
parameters {
  real beta0;
  real beta1;
  real<lower=0> sigma;
  real<lower=0, upper=1> rho;
  vector[N_conn] phi;                     // unit ICAR per component
  vector[N] theta;                        // unit normal
}
model {
  vector[N] u = sigma * theta;            // isolated areas: unstructured, sd sigma
  u[conn] = sigma * (sqrt(rho) * (phi .* inv_sqrt_scale) + sqrt(1 - rho) * theta[conn]);
  y ~ poisson_log(log_E + beta0 + beta1 * x + u);
  target += -0.5 * dot_self(phi[node1] - phi[node2]);
  for (k in 1:K)
    sum(segment(phi, comp_start[k], comp_size[k])) ~ normal(0, 0.001 * comp_size[k]);
  theta ~ normal(0, 1);
  beta0 ~ normal(prior_beta0[1], prior_beta0[2]);
  beta1 ~ normal(prior_beta1[1], prior_beta1[2]);
  sigma ~ normal(0, prior_sigma);
  rho ~ beta(prior_rho[1], prior_rho[2]);
}
