// Package detect is the hub's detector: it reads health cells and rollout
// states and raises advisories (catastrophe, regression, cross-vendor).
package detect
