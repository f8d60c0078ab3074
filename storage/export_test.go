package storage

// IsConflict is isConflict, the product's reading of a commit that lost
// to another writer, for the tests outside the package.
var IsConflict = isConflict
