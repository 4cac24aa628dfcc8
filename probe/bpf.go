package probe

import (
	"fmt"

	"golang.org/x/net/bpf"
)

// filter is the packet socket's BPF program: only frames that can be an
// answer to this probe reach user space — ARP, ICMP, ICMPv6 (neighbour
// advertisements and errors), and TCP or UDP to the probe's source port.
// Everything else on a busy director's NIC is dropped in the kernel.
// Untagged Ethernet only; IPv4 options are handled (the port is read
// behind the header length).
func filter(sport uint16) ([]bpf.RawInstruction, error) {
	const (
		etARP  = 0x0806
		etIPv4 = 0x0800
		etIPv6 = 0x86dd
	)
	p := uint32(sport)
	prog := []bpf.Instruction{
		/* 0 */ bpf.LoadAbsolute{Off: 12, Size: 2},
		/* 1 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: etARP, SkipTrue: 15}, // -> accept (17)
		/* 2 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: etIPv4, SkipFalse: 7}, // -> 10
		// IPv4
		/* 3 */ bpf.LoadAbsolute{Off: 23, Size: 1},
		/* 4 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: 1, SkipTrue: 12}, // ICMP -> accept
		/* 5 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: 6, SkipTrue: 1}, // TCP -> 7
		/* 6 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: 17, SkipFalse: 11}, // not UDP -> drop (18)
		/* 7 */ bpf.LoadMemShift{Off: 14},
		/* 8 */ bpf.LoadIndirect{Off: 16, Size: 2}, // 14 + IHL*4 + 2: destination port
		/* 9 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: p, SkipTrue: 7, SkipFalse: 8},
		// IPv6 (no extension headers: answers to a probe carry none)
		/* 10 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: etIPv6, SkipFalse: 7}, // -> drop
		/* 11 */ bpf.LoadAbsolute{Off: 20, Size: 1},
		/* 12 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: 58, SkipTrue: 4}, // ICMPv6 -> accept
		/* 13 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: 6, SkipTrue: 1},
		/* 14 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: 17, SkipFalse: 3},
		/* 15 */ bpf.LoadAbsolute{Off: 14 + 40 + 2, Size: 2},
		/* 16 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: p, SkipFalse: 1},
		/* 17 */ bpf.RetConstant{Val: 0x40000},
		/* 18 */ bpf.RetConstant{Val: 0},
	}
	raw, err := bpf.Assemble(prog)
	if err != nil {
		return nil, fmt.Errorf("assemble probe filter: %w", err)
	}
	return raw, nil
}
