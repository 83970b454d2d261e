// Package fftype is FlowFabric's shared vocabulary: execution ids and records, their
// state dimensions and public states, policies, the parameters and outcomes of every
// operation, typed errors with their stable codes, events and their filters, and the
// Clock. The engine, the stores, the HTTP API and its Go client all speak it; the root
// package re-exports what users need.
package fftype
