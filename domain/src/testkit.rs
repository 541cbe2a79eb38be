//! Helpers shared by adapters' tests: the store contract suite.
