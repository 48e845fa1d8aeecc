package filesync

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"io/fs"
	"os"
	"strconv"
)

// TreeHash returns a hex SHA-256 of a whole directory tree: every path, its
// type and mode, regular files' contents and symbolic links' targets; not
// modification times or owners. Nothing is excluded (Berth's temporary
// files neither). Two trees with the same hash have the same content.
func TreeHash(dir string) (string, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return "", err
	}
	defer root.Close()
	h := sha256.New()
	var buf []byte
	field := func(s string) {
		buf = binary.AppendUvarint(buf[:0], uint64(len(s)))
		buf = append(buf, s...)
		h.Write(buf)
	}
	copyBuf := make([]byte, copyBufSize)
	err = walkTree(nil, root, "", true, func(dir *os.Root, rel string, fi fs.FileInfo) (bool, error) {
		field(rel)
		field(strconv.FormatUint(uint64(modeBits(fi.Mode())), 8))
		switch kindOf(fi.Mode()) {
		case kindFile:
			sum, _, err := hashFile(nil, root, rel, copyBuf)
			if err != nil {
				return false, err
			}
			field(sum)
		case kindSymlink:
			target, err := root.Readlink(rel)
			if err != nil {
				return false, err
			}
			field(target)
		}
		return true, nil
	})
	if err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
