package rpc

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/muxrpc/muxrpc/mux"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
)

// The session hello (PROTOCOL.md, section 13): the first exchange of
// every session, before any call. The dialing side opens a stream of
// HelloStreamType and sends one HELLO part: the call layer's version, its
// session metadata and the services it serves. The other side
// authenticates it and answers with one WELCOME part: admitted, with the
// services it serves, or refused, with a status; a refused session ends.
// Calls the dialing side opens before the welcome wait for it on the
// other side.

// HelloStreamType is the mux stream type of the session hello.
const HelloStreamType = 3

// helloVersion is the version of the call layer this package speaks.
const helloVersion = 1

// Part kinds of the session hello.
const (
	partHello   byte = 6
	partWelcome byte = 7
)

// Field numbers of the Hello and Welcome messages.
const (
	fieldHelloVersion  = 1
	fieldHelloMetadata = 2
	fieldHelloServices = 3

	fieldWelcomeVersion  = 1
	fieldWelcomeCode     = 2
	fieldWelcomeMessage  = 3
	fieldWelcomeServices = 4
)

// maxServices bounds the service names of one HELLO or WELCOME, as
// maxMetadataEntries bounds metadata entries.
const maxServices = 4096

// hello is a decoded HELLO or WELCOME: a WELCOME has a code and a
// message, a HELLO metadata.
type hello struct {
	version  uint32
	md       metadata.MD
	services []string
	code     codes.Code
	message  string
}

// appendHello appends a HELLO part.
func appendHello(b []byte, md metadata.MD, services []string) []byte {
	b, start := beginPart(b, partHello)
	b = protowire.AppendTag(b, fieldHelloVersion, protowire.VarintType)
	b = protowire.AppendVarint(b, helloVersion)
	b = appendMetadata(b, fieldHelloMetadata, md)
	b = appendStrings(b, fieldHelloServices, services)
	return endPart(b, start)
}

// appendWelcome appends a WELCOME part: admitted with services, or
// refused with s.
func appendWelcome(b []byte, s *status.Status, services []string) []byte {
	b, start := beginPart(b, partWelcome)
	b = protowire.AppendTag(b, fieldWelcomeVersion, protowire.VarintType)
	b = protowire.AppendVarint(b, helloVersion)
	if s.Code() != codes.OK {
		b = protowire.AppendTag(b, fieldWelcomeCode, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(s.Code()))
		b = protowire.AppendTag(b, fieldWelcomeMessage, protowire.BytesType)
		b = protowire.AppendString(b, validUTF8(s.Message()))
	}
	b = appendStrings(b, fieldWelcomeServices, services)
	return endPart(b, start)
}

func appendStrings(b []byte, field protowire.Number, ss []string) []byte {
	for _, s := range ss {
		b = protowire.AppendTag(b, field, protowire.BytesType)
		b = protowire.AppendString(b, s)
	}
	return b
}

// parseHello decodes a HELLO (welcome false) or WELCOME payload.
func parseHello(p []byte, welcome bool) (hello, error) {
	var h hello
	entries := 0
	err := parseFields(p, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		switch {
		case num == fieldHelloVersion && typ == protowire.VarintType: // the same field in both
			h.version = uint32(min(x, 1<<32-1))
		case num == fieldHelloServices && !welcome || num == fieldWelcomeServices && welcome:
			if typ != protowire.BytesType {
				return nil
			}
			if len(h.services) == maxServices {
				return status.Errorf(codes.ResourceExhausted, "session hello names more than %d services", maxServices)
			}
			h.services = append(h.services, validUTF8(string(v)))
		case !welcome && num == fieldHelloMetadata && typ == protowire.BytesType:
			return addEntry(&h.md, &entries, v)
		case welcome && num == fieldWelcomeCode && typ == protowire.VarintType:
			if x > 1<<31-1 {
				return fmt.Errorf("%w: welcome code %d", errMalformed, x)
			}
			h.code = codes.Code(x)
		case welcome && num == fieldWelcomeMessage && typ == protowire.BytesType:
			h.message = validUTF8(string(v))
		}
		return nil
	})
	if err == nil && h.version == 0 {
		err = fmt.Errorf("%w: no version", errMalformed)
	}
	return h, err
}

// greeting is what the hello established about the other side.
type greeting struct {
	identity Identity
	services []string // the services the other side serves, sorted
}

// Identity returns who the other side of the session is: on a Server's
// side, what its Authenticator said once it admitted the session (the
// zero Identity before, or without an Authenticator); on the dialing
// side, the zero Identity.
func (p *Peer) Identity() Identity {
	if g := p.greeting.Load(); g != nil {
		return g.identity
	}
	return Identity{}
}

// RemoteServices returns the names of the services the other side said
// it serves, sorted: a client's WithServices, a Server's registered
// services. It is nil until the session hello has been exchanged (Dial
// and ServeSession's OnPeer come after it).
func (p *Peer) RemoteServices() []string {
	if g := p.greeting.Load(); g != nil {
		return slices.Clone(g.services)
	}
	return nil
}

// ServesRemotely reports whether the other side said it serves service.
func (p *Peer) ServesRemotely(service string) bool {
	g := p.greeting.Load()
	if g == nil {
		return false
	}
	_, found := slices.BinarySearch(g.services, service)
	return found
}

// serviceNames returns the names of the services p serves, sorted.
func (p *Peer) serviceNames() []string {
	if p.srv == nil {
		return nil
	}
	names := make([]string, 0, len(p.srv.services))
	for name := range p.srv.services {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// handshakeTimeout is how long a session's hello may take, from when the
// Peer is made: the session's handshake timeout.
func (p *Peer) handshakeTimeout() time.Duration {
	return cmp.Or(p.cfg.mux.HandshakeTimeout, defaultHandshakeTimeout)
}

// defaultHandshakeTimeout is mux.Config.HandshakeTimeout's default, and
// defaultAuthSlots MaxPendingHandshakes': how long a hello may take, and
// how many Authenticators a Server runs at once.
const (
	defaultHandshakeTimeout = 10 * time.Second
	defaultAuthSlots        = 1024
)

// greet is the dialing side's hello: it sends the HELLO and waits for the
// WELCOME, until ctx ends or the handshake time is up. Admitted, p serves
// its services and may call; refused, greet ends the session and returns
// the refusal's status, which the calls made meanwhile fail with too.
func (p *Peer) greet(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, p.handshakeTimeout())
	defer cancel()
	p.helloErr = p.exchangeHello(ctx)
	close(p.greeted)
	if p.helloErr != nil {
		p.kill()
		return p.helloErr
	}
	p.admit()
	return nil
}

// startHello begins the session hello without waiting for it: the
// dialing side's greet in a goroutine of its own, or the other side's
// awaitHello.
func (p *Peer) startHello() {
	if p.sess.IsClient() {
		go p.greet(context.Background())
	} else {
		p.awaitHello()
	}
}

// refusal returns why the session hello failed, or nil. A call that
// failed because its session ended may have raced the hello's end on a
// Peer that did not wait for it (NewPeer): it waits for that end, which
// comes soon once the session has ended, so that the call fails with the
// refusal the server sent before ending the session.
func (p *Peer) refusal() error {
	if !p.sess.IsClient() || p.sess.Err() == nil {
		return nil // a failed hello ends the session
	}
	<-p.greeted
	return p.helloErr
}

// exchangeHello sends the HELLO and reads the WELCOME.
func (p *Peer) exchangeHello(ctx context.Context) error {
	var md metadata.MD
	if p.cfg.sessionMD != nil {
		var err error
		if md, err = p.cfg.sessionMD(ctx); err != nil {
			return fmt.Errorf("rpc: session metadata: %w", err)
		}
		if err := checkMetadata(md); err != nil {
			return err
		}
	}
	st, err := p.sess.OpenType(ctx, HelloStreamType)
	if err != nil {
		return helloFailure(ctx, err)
	}
	defer st.Close()
	stop := context.AfterFunc(ctx, func() { st.Reset(resetCode(ctx)) })
	defer stop()
	if _, err := st.WriteLast(appendHello(nil, md, p.serviceNames())); err != nil {
		return helloFailure(ctx, err)
	}
	r := partReader{st: st, maxHeader: p.cfg.maxHeader}
	defer r.release()
	kind, payload, err := r.next()
	switch {
	case err != nil:
		return helloFailure(ctx, err)
	case kind != partWelcome:
		return status.Errorf(codes.Internal, "rpc: session hello answered with a part of kind %d, not a welcome", kind)
	}
	w, err := parseHello(payload, true)
	switch {
	case err != nil:
		return status.Errorf(codes.Internal, "rpc: malformed welcome: %v", err)
	case w.version != helloVersion:
		return status.Errorf(codes.Unimplemented, "rpc: the server speaks version %d of the call layer, not %d", w.version, helloVersion)
	case w.code != codes.OK:
		return status.Error(w.code, w.message)
	}
	slices.Sort(w.services)
	p.greeting.Store(&greeting{services: w.services})
	return nil
}

// helloFailure is the error of a hello that failed on its stream: the
// context's, or Unavailable.
func helloFailure(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return status.FromContextError(ctx.Err()).Err()
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.Errorf(codes.Unavailable, "rpc: session hello: %v", err)
}

// awaitHello is the accepting side's hello: it has the session's first
// hello stream answered by welcome, and ends the session if none has come
// within the handshake timeout. Later hello streams are reset.
func (p *Peer) awaitHello() {
	var taken atomic.Bool
	timer := time.AfterFunc(p.handshakeTimeout(), func() {
		if !taken.Load() {
			p.logNoHello()
			p.sess.GoAway(mux.GoAwayProtocolError, []byte("no session hello"))
			p.kill()
		}
	})
	p.sess.HandleType(HelloStreamType, func(st *mux.Stream) {
		if taken.Swap(true) {
			st.Reset(mux.ResetCancel) // the hello is over; later ones mean nothing
			return
		}
		timer.Stop()
		p.welcome(st)
	})
}

// welcome reads the HELLO on st, authenticates it, and answers: admitted,
// p serves calls from then on; refused, the session ends.
func (p *Peer) welcome(st *mux.Stream) {
	defer st.Close()
	ctx, cancel := context.WithTimeout(p.ctx, p.handshakeTimeout())
	defer cancel()
	h, err := readHello(ctx, st, p.cfg.maxHeader)
	byAuth := err == nil // a failure from here on is the Authenticator's
	var g *greeting
	if err == nil {
		g, err = p.authenticate(ctx, h)
	}
	var services []string
	if err == nil {
		services = p.serviceNames()
		// Admitted before the welcome leaves, so that once the dialing
		// side has it (its Dial returns), the Server lists the session in
		// its Directory and its Peers. Calls this side makes meanwhile
		// wait on the other side for the welcome, as the other side's do
		// here.
		p.greeting.Store(g)
		p.admit()
	}
	s := helloStatus(ctx, err)
	if err != nil {
		// Before the WELCOME leaves: the dialing side closes the session
		// once it has read it, which would leave the refusal to look like
		// a hello cut short by the session's end.
		p.logRefusal(ctx, s, byAuth)
	}
	_, werr := st.WriteLast(appendWelcome(nil, s, services))
	switch {
	case err != nil:
		st.Close()
		p.refuse()
	case werr != nil:
		p.closeNow()
	}
}

// refuse ends a session whose hello was refused, once the WELCOME saying
// so has been queued. It sends a GoAway, and then waits, for up to
// refusalLinger, for the dialing side to close the session itself, as it
// does once it has read the refusal: closing a connection with input
// unread (a window update the peer sent meanwhile, say) makes the kernel
// reset it, and a reset discards what the peer has not read yet, the
// WELCOME among it. Only then, or at once if the peer does not close, does
// it close the session.
func (p *Peer) refuse() {
	p.sess.GoAway(mux.GoAwayNormal, []byte("session refused"))
	ctx, cancel := context.WithTimeout(context.Background(), refusalLinger)
	defer cancel()
	if p.sess.Flush(ctx) == nil {
		select {
		case <-p.sess.Done():
		case <-ctx.Done():
		}
	}
	p.closeNow()
}

// refusalLinger bounds how long refuse waits for the refused side to
// close.
const refusalLinger = time.Second

// readHello reads the HELLO on st, until ctx ends.
func readHello(ctx context.Context, st *mux.Stream, maxHeader int) (hello, error) {
	stop := context.AfterFunc(ctx, func() { st.Reset(resetDeadlineExceeded) })
	defer stop()
	r := partReader{st: st, maxHeader: maxHeader}
	defer r.release()
	kind, payload, err := r.next()
	if err != nil {
		var tooLarge *errTooLarge
		if errors.As(err, &tooLarge) {
			return hello{}, status.Error(codes.ResourceExhausted, "rpc: session hello: "+tooLarge.Error())
		}
		return hello{}, status.Errorf(codes.InvalidArgument, "rpc: session hello: %v", err)
	}
	if kind != partHello {
		return hello{}, status.Errorf(codes.InvalidArgument, "rpc: session hello began with a part of kind %d", kind)
	}
	h, err := parseHello(payload, false)
	if err != nil {
		if _, ok := status.FromError(err); ok {
			return hello{}, err
		}
		return hello{}, status.Errorf(codes.InvalidArgument, "rpc: malformed session hello: %v", err)
	}
	if h.version < helloVersion {
		return hello{}, status.Errorf(codes.Unimplemented, "rpc: session hello of version %d; this server speaks %d", h.version, helloVersion)
	}
	slices.Sort(h.services)
	h.services = slices.Compact(h.services)
	return h, nil
}

// authenticate runs the Server's Authenticator on h, if there is one.
func (p *Peer) authenticate(ctx context.Context, h hello) (*greeting, error) {
	g := &greeting{services: h.services}
	if p.srv == nil || p.srv.cfg.auth == nil {
		return g, nil
	}
	if err := p.srv.authSlot(ctx); err != nil {
		return nil, err
	}
	defer p.srv.authDone()
	if h.md == nil {
		h.md = metadata.MD{}
	}
	sh := &SessionHello{Metadata: h.md, Services: slices.Clone(h.services), RemoteAddr: p.sess.RemoteAddr()}
	if tc, ok := p.sess.Conn().(*tls.Conn); ok {
		state := tc.ConnectionState()
		sh.TLS = &state
	}
	var err error
	if g.identity, err = p.srv.cfg.auth(ctx, sh); err != nil {
		return nil, err
	}
	return g, nil
}

// helloStatus is the WELCOME's status for what authenticate returned:
// OK, the authenticator's refusal, or Unauthenticated.
func helloStatus(ctx context.Context, err error) *status.Status {
	if err == nil {
		return status.New(codes.OK, "")
	}
	if s, ok := status.FromError(err); ok && s.Code() != codes.Unknown {
		return s
	}
	if ctx.Err() != nil {
		return status.New(codes.DeadlineExceeded, "rpc: session hello not done within the handshake timeout")
	}
	return status.New(codes.Unauthenticated, err.Error())
}
