package broker

// EmptyStore gives the external tests (package broker_test) a metadata
// store of their own: see emptyStore.
var EmptyStore = emptyStore
