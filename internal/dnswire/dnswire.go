// Package dnswire is the little of the DNS wire format dsr-agent needs: the
// names in a query and an answer (RFC 1035 section 3.1 and 4.1.4), shared by
// the health check and the lab's DNS client and server.
package dnswire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// AppendName appends name in wire form (labels, then the root's zero).
func AppendName(b []byte, name string) ([]byte, error) {
	name = strings.TrimSuffix(name, ".")
	if name != "" {
		for l := range strings.SplitSeq(name, ".") {
			if l == "" || len(l) > 63 {
				return nil, fmt.Errorf("dns: bad label %q in %q", l, name)
			}
			b = append(b, byte(len(l)))
			b = append(b, l...)
		}
	}
	return append(b, 0), nil
}

// ReadName decodes the (possibly compressed) name at off and returns it with
// the offset just past it. Compression loops and names running past the
// message are errors.
func ReadName(msg []byte, off int) (string, int, error) {
	var labels []string
	end := -1
	for hops := 0; ; hops++ {
		if off >= len(msg) || hops > 128 {
			return "", 0, errors.New("name runs past the message")
		}
		n := int(msg[off])
		switch {
		case n == 0:
			if end < 0 {
				end = off + 1
			}
			return strings.Join(labels, ".") + ".", end, nil
		case n&0xc0 == 0xc0:
			if off+1 >= len(msg) {
				return "", 0, errors.New("truncated compression pointer")
			}
			if end < 0 {
				end = off + 2
			}
			off = int(binary.BigEndian.Uint16(msg[off:]) & 0x3fff)
		case n&0xc0 != 0:
			return "", 0, fmt.Errorf("bad label type %#x", n)
		default:
			if off+1+n > len(msg) {
				return "", 0, errors.New("label runs past the message")
			}
			labels = append(labels, string(msg[off+1:off+1+n]))
			off += 1 + n
		}
	}
}
