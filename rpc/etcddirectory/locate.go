package etcddirectory

import (
	"context"
	"fmt"
	"net/url"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// A Location is a server that holds a name: one published key.
type Location struct {
	// ServerID is the publishing server's Options.ServerID.
	ServerID string
	// Address is its Options.Address: where to reach it.
	Address string
}

// Locate returns the servers that hold name, as published under prefix
// (DefaultPrefix if empty), through cli: one read of etcd, linearizable.
// They come newest first, by the etcd revision that created each key,
// so that during a move the server the name moved to comes before the one
// it left (whose key goes when its session's end has been published, or
// its lease expires). None, and no error, when no server holds name.
func Locate(ctx context.Context, cli *clientv3.Client, prefix, name string) ([]Location, error) {
	under := prefixOrDefault(prefix) + "/" + url.PathEscape(name) + "/"
	resp, err := cli.Get(ctx, under, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortDescend))
	if err != nil {
		return nil, fmt.Errorf("etcddirectory: locate %q: %w", name, err)
	}
	locs := make([]Location, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		rest := strings.TrimPrefix(string(kv.Key), under)
		id, err := url.PathUnescape(rest)
		if err != nil || strings.Contains(rest, "/") {
			continue // not a key Publish wrote: its ServerID is escaped
		}
		locs = append(locs, Location{ServerID: id, Address: string(kv.Value)})
	}
	return locs, nil
}
