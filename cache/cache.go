// Package cache is kiln's on-disk store under --root: compressed blobs by
// digest, unpacked layers (overlay format) by diffID, scratch space.
package cache
