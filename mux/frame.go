package mux

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Wire constants of the native protocol. PROTOCOL.md is the normative text.
const (
	// ProtocolVersion is the version byte this package sends in its preface.
	ProtocolVersion = 1

	prefaceLen      = 8
	frameHeaderLen  = 9
	maxFramePayload = 1<<24 - 1
	// maxControlPayload bounds the payload of every frame but DATA, so
	// that control frames always fit the reader's buffer.
	maxControlPayload = 16 << 10
	maxGoAwayDebug    = maxControlPayload - 8
	maxWindow         = 1<<31 - 1
	maxStreamID       = 1<<31 - 1
	settingLen        = 6
)

// preface opens every native connection, in both directions: six magic
// bytes, a reserved zero byte and the protocol version.
var prefaceMagic = [6]byte{'M', 'U', 'X', 'R', 'P', 'C'}

// frameType is the kind of a frame, the fourth byte of its header.
type frameType uint8

const (
	frameData         frameType = 0x0
	frameReset        frameType = 0x1
	frameWindowUpdate frameType = 0x2
	framePing         frameType = 0x3
	frameGoAway       frameType = 0x4
	frameSettings     frameType = 0x5
)

func (t frameType) String() string {
	switch t {
	case frameData:
		return "DATA"
	case frameReset:
		return "RESET"
	case frameWindowUpdate:
		return "WINDOW_UPDATE"
	case framePing:
		return "PING"
	case frameGoAway:
		return "GOAWAY"
	case frameSettings:
		return "SETTINGS"
	}
	return fmt.Sprintf("frameType(%#x)", uint8(t))
}

// Frame flags. Flags undefined for a frame type must be zero.
const (
	flagEnd  uint8 = 0x1 // DATA: the sender's last frame on this stream.
	flagOpen uint8 = 0x2 // DATA: the stream's first frame; the payload starts with its type.
	flagAck  uint8 = 0x1 // PING: this is the answer to a ping.
)

// Setting identifiers carried by the SETTINGS frame.
const (
	settingMaxIncomingStreams uint16 = 0x1
	settingInitialWindow      uint16 = 0x2
	settingMaxFrameSize       uint16 = 0x3
)

// frameHeader is the fixed nine-byte header in front of every frame.
type frameHeader struct {
	length   uint32 // payload length, 24 bits
	typ      frameType
	flags    uint8
	streamID uint32 // 31 bits; 0 addresses the session
}

// errFrame marks a frame that breaks the protocol's rules.
var errFrame = errors.New("malformed frame")

// appendFrameHeader appends h in wire format.
func appendFrameHeader(b []byte, h frameHeader) []byte {
	return append(b,
		byte(h.length>>16), byte(h.length>>8), byte(h.length),
		byte(h.typ), h.flags,
		byte(h.streamID>>24), byte(h.streamID>>16), byte(h.streamID>>8), byte(h.streamID))
}

// parseFrameHeader decodes the first nine bytes of b. It checks what can be
// checked without session state: reserved bits, flags, lengths and stream
// ids required or forbidden by the frame type. maxPayload is the largest
// payload this side accepts.
func parseFrameHeader(b []byte, maxPayload uint32) (frameHeader, error) {
	_ = b[frameHeaderLen-1]
	h := frameHeader{
		length:   uint32(b[0])<<16 | uint32(b[1])<<8 | uint32(b[2]),
		typ:      frameType(b[3]),
		flags:    b[4],
		streamID: binary.BigEndian.Uint32(b[5:9]),
	}
	if h.streamID > maxStreamID {
		return h, fmt.Errorf("%w: reserved bit of stream id set", errFrame)
	}
	if h.typ != frameData {
		maxPayload = min(maxPayload, maxControlPayload)
	}
	if h.length > maxPayload {
		return h, fmt.Errorf("%w: %s payload of %d bytes exceeds the limit of %d", errFrame, h.typ, h.length, maxPayload)
	}
	var allowedFlags uint8
	switch h.typ {
	case frameData:
		allowedFlags = flagEnd | flagOpen
		if h.streamID == 0 {
			return h, fmt.Errorf("%w: DATA on stream 0", errFrame)
		}
	case frameReset:
		if h.streamID == 0 || h.length != 4 {
			return h, fmt.Errorf("%w: RESET needs a stream and a 4-byte payload", errFrame)
		}
	case frameWindowUpdate:
		if h.streamID == 0 || h.length != 4 {
			return h, fmt.Errorf("%w: WINDOW_UPDATE needs a stream and a 4-byte payload", errFrame)
		}
	case framePing:
		allowedFlags = flagAck
		if h.streamID != 0 || h.length != 8 {
			return h, fmt.Errorf("%w: PING needs stream 0 and an 8-byte payload", errFrame)
		}
	case frameGoAway:
		if h.streamID != 0 || h.length < 8 {
			return h, fmt.Errorf("%w: GOAWAY needs stream 0 and at least 8 bytes", errFrame)
		}
	case frameSettings:
		if h.streamID != 0 || h.length%settingLen != 0 {
			return h, fmt.Errorf("%w: SETTINGS needs stream 0 and a multiple of 6 bytes", errFrame)
		}
	default:
		return h, fmt.Errorf("%w: unknown frame type %#x", errFrame, uint8(h.typ))
	}
	if h.flags&^allowedFlags != 0 {
		return h, fmt.Errorf("%w: undefined flags %#x on %s", errFrame, h.flags, h.typ)
	}
	return h, nil
}

// appendPreface appends the connection preface.
func appendPreface(b []byte) []byte {
	b = append(b, prefaceMagic[:]...)
	return append(b, 0, ProtocolVersion)
}

// checkPreface validates a peer's eight-byte preface.
func checkPreface(b []byte) error {
	if [6]byte(b[:6]) != prefaceMagic || b[6] != 0 {
		return fmt.Errorf("%w: got %q", ErrNotMuxrpc, b)
	}
	if b[7] != ProtocolVersion {
		return fmt.Errorf("%w: peer speaks version %d, this side %d", ErrVersion, b[7], ProtocolVersion)
	}
	return nil
}

// appendGoAway appends a GOAWAY frame for g.
func appendGoAway(b []byte, g *GoAwayError) []byte {
	b = appendFrameHeader(b, frameHeader{length: uint32(8 + len(g.Debug)), typ: frameGoAway})
	b = binary.BigEndian.AppendUint32(b, g.LastStreamID)
	b = binary.BigEndian.AppendUint32(b, g.Code)
	return append(b, g.Debug...)
}

// settings are the values each side announces once, right after its preface.
type settings struct {
	maxIncomingStreams uint32
	initialWindow      uint32
	maxFrameSize       uint32
}

func appendSettings(b []byte, s settings) []byte {
	b = appendFrameHeader(b, frameHeader{length: 3 * settingLen, typ: frameSettings})
	b = appendSetting(b, settingMaxIncomingStreams, s.maxIncomingStreams)
	b = appendSetting(b, settingInitialWindow, s.initialWindow)
	return appendSetting(b, settingMaxFrameSize, s.maxFrameSize)
}

func appendSetting(b []byte, id uint16, v uint32) []byte {
	b = binary.BigEndian.AppendUint16(b, id)
	return binary.BigEndian.AppendUint32(b, v)
}

// parseSettings decodes a SETTINGS payload. Unknown identifiers are ignored
// so that later versions can add settings.
func parseSettings(p []byte) (settings, error) {
	s := settings{maxIncomingStreams: maxStreamID, initialWindow: defaultStreamWindow, maxFrameSize: minFrameSize}
	for ; len(p) >= settingLen; p = p[settingLen:] {
		v := binary.BigEndian.Uint32(p[2:6])
		switch binary.BigEndian.Uint16(p) {
		case settingMaxIncomingStreams:
			s.maxIncomingStreams = v
		case settingInitialWindow:
			if v < minStreamWindow || v > maxWindow {
				return s, fmt.Errorf("%w: initial window %d out of range [1 KiB, 2^31-1]", errFrame, v)
			}
			s.initialWindow = v
		case settingMaxFrameSize:
			if v < minFrameSize || v > maxFramePayload {
				return s, fmt.Errorf("%w: max frame size %d out of range", errFrame, v)
			}
			s.maxFrameSize = v
		}
	}
	return s, nil
}
