//go:build unix

package server

import (
	"os"
	"syscall"
)

// statIno returns a file's inode number.
func statIno(fi os.FileInfo) (uint64, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return uint64(st.Ino), true
}
