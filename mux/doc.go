// Package mux multiplexes many byte streams over one connection.
//
// A [Session] runs on one net.Conn (TCP, TLS, a Unix socket, anything
// reliable and ordered) and carries any number of streams ([Stream]), opened by
// either side: the side that dialed is the client, the other the server,
// and apart from that the two are the same. The wire protocol is
// specified byte by byte in PROTOCOL.md at the root of the module, so that
// other languages can implement it.
//
// # Sessions
//
// [Dial] and [DialTLS] connect and start the client side; [Listen],
// [ListenTLS] and [NewListener] return a [Listener] whose Accept yields
// server-side sessions; [Client] and [Server] start a session on a
// connection you already have. Either way the two peers first exchange a
// preface, which carries the protocol version (an exact match is
// required: [ErrNotMuxrpc], [ErrVersion]), and their settings; the
// constructors return once that handshake is done. [Session.Close] ends a
// session gracefully and [Session.Kill] at once; [Session.Err] and
// [Session.Done] say when and why it ended. A nil *[Config] means the
// defaults. [Session.AfterFunc] runs a function once the session has
// ended, with no goroutine waiting for that meanwhile.
//
// # What a session costs
//
// A session of the native transport runs two goroutines, one that reads
// the connection and one that writes what senders could not write at
// once; keepalive and IdleTimeout are timers. While it waits for bytes on
// a TCP or Unix connection (on Unix systems) it holds no buffer: its
// reader waits for the connection to become readable, then takes a
// pooled 32 KiB read buffer, and gives it back once it has read what
// came; the send buffers go back to a pool whenever a write empties
// them. An idle session so costs about 12 KiB, most of it the two
// goroutines' stacks. On TLS and other connections the reader keeps its
// read buffer while it waits. The reader runs the handler of a new
// stream (see [Session.HandleType]) itself, having handed the reading to
// a spare goroutine, of which the process keeps a few, for a moment after
// their last use.
//
// # Streams
//
// [Session.Open] returns a new stream without a round trip: the peer
// learns of it with its first frame, so opening costs nothing on the wire.
// [Session.Accept] returns the peer's streams. A Stream is a [net.Conn]:
// Read, Write, deadlines and Close behave as on TCP. In addition
// [Stream.CloseWrite] ends only this side's direction (the peer reads
// io.EOF, and this side keeps reading), [Stream.WriteLast] writes the last
// bytes and ends the direction in one frame, and [Stream.Reset] aborts
// both directions with a code the peer sees in a *[ResetError]. Close
// delivers what was written and then, if the peer was still sending,
// resets the stream with [ResetCancel]. A stream is never closed behind
// the application's back: close every stream you open or accept.
//
// # Stream types
//
// Every stream has a [StreamType], chosen by the opener with
// [Session.OpenType] and matched by the acceptor with [Session.AcceptType],
// so that several protocols share one session without seeing each other's
// streams. Open and Accept use [TypeDefault]. [Session.DialContext] and
// [Session.NetListener] wrap [TypeNet] streams as net.Conn and
// net.Listener, so that, for example, net/http runs over a session.
//
// # Flow control and limits
//
// Flow control is per stream: a peer sends at most [Config.StreamWindow]
// bytes on a stream beyond what this side's application has read. There
// is no session-wide window, so a stream whose reader is slow stalls only
// its own writer, never the other streams; a session buffers at most one
// window per open stream. [Config.MaxIncomingStreams] bounds how many
// streams the peer may have open toward this side, counting those not yet
// accepted. The peer learns the limit in the handshake: at the limit its
// Open waits for a free slot, and a stream beyond it would be refused. The
// same number bounds the peer's streams the application has at once, so
// that a peer that opens and resets streams quickly cannot make it run
// more handlers than that.
//
// Nothing but a writer of data waits on a congested connection: a Write
// waits for the peer's window and for its turn in the session's send
// buffer, and its deadline, Close, Reset and the end of the session end
// that wait; Close, Reset, and the session's own answers never wait.
//
// # Scheduling and priority
//
// Streams share the connection fairly: each write to the connection holds
// a bounded share of each stream's data, and streams with data waiting
// take turns, so a small message never waits behind another stream's large
// write. A stream that writes again without reading in between has its
// frames gathered into batches, one syscall for many messages.
// Stream.SetPriority orders the streams waiting for a turn: higher
// priorities go first (see Priority).
//
// # GoAway and retry safety
//
// [Session.GoAway], which Close sends first, tells the peer that no new
// stream of its will be processed: streams already seen complete, later
// ones fail as never processed, and the peer opens no more streams on the
// session. Errors of streams the peer provably never processed (refused
// over its limit, excluded by its GoAway, or never sent before the session
// ended) satisfy errors.Is(err, [ErrRefused]); [IsRetrySafe] reports
// exactly that, and only then is it safe to send the same request again,
// on this session or another, without risk of doing its work twice.
// A write that fails because the peer closed the connection does not end
// the session before it has read what the connection still holds (for
// at most 500 ms): the peer's GoAway, or the answers of streams it
// finished, may wait there unread, and a stream the peer's GoAway
// excluded fails retry-safe even if this side's write failed first.
//
// # Keepalive
//
// A session pings its peer after [Config.KeepAliveInterval] without
// hearing from it or without sending to it, and ends with
// [ErrKeepAliveTimeout] when nothing has been received, or a write has
// made no progress, for [Config.KeepAliveTimeout]. A slow link the peer
// keeps reading is alive, however long one batch of frames takes to cross
// it. [Session.Ping] measures the round trip on demand. A live peer that
// opens no stream keeps its session unless [Config.IdleTimeout] is set:
// the session then ends, as by Close, with [ErrIdleTimeout].
//
// # Introspection
//
// [Session.Stats] returns a snapshot for an operator: the transport, when
// the session started, its open streams, the bytes written to and read
// from its connection (handshake and framing included, so that one
// side's BytesSent is the other's BytesReceived once the session is
// idle), and the round trip of the last ping answered, which keepalive
// measures every [Config.KeepAliveInterval] of quiet on the native
// transport. Counting costs one atomic addition per read or write of the
// connection, where the session counts its bytes anyway. On the Smux
// transport LastRTT stays 0: smux's keepalive is never answered.
//
// # Transports
//
// [Native], the default, is this package's own framing, described in
// PROTOCOL.md. [Smux] speaks github.com/xtaci/smux protocol version 2
// under the same API, for peers that already use smux (over KCP, say);
// each of its streams begins with its type and an admission status, and
// each side announces its stream limit on a settings stream. It has no
// preface and cannot express everything: Reset, GoAway, Ping and
// CloseWrite return [ErrUnsupported], and OnAbort cannot tell the peer's
// close from its abort (see [Smux]). Both peers must use the same
// transport.
//
// # Example
//
// A client opens a stream, sends a request, ends its direction and reads
// the answer:
//
//	sess, err := mux.Dial(ctx, "tcp", "example.net:7000", nil)
//	if err != nil {
//		return err
//	}
//	defer sess.Close()
//	st, err := sess.Open(ctx)
//	if err != nil {
//		return err
//	}
//	defer st.Close()
//	if _, err := st.Write([]byte("ping")); err != nil {
//		return err
//	}
//	if err := st.CloseWrite(); err != nil {
//		return err
//	}
//	reply, err := io.ReadAll(st)
//
// A server accepts sessions, and on each session the streams of the types
// it serves:
//
//	ln, err := mux.Listen("tcp", ":7000", nil)
//	if err != nil {
//		return err
//	}
//	defer ln.Close()
//	for {
//		sess, err := ln.Accept()
//		if err != nil {
//			return err
//		}
//		go func() {
//			defer sess.Close()
//			for {
//				st, err := sess.AcceptType(ctx, mux.TypeDefault)
//				if err != nil {
//					return // the session ended
//				}
//				go handle(st) // reads the request, writes the reply, closes st
//			}
//		}()
//	}
package mux
