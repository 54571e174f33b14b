/* libFuzzer target for the client's site configuration: the first pass that
 * finds bucket aliases, the table that grows with them, and the loader.
 * Oracles: a failed load names a reason and leaves the configuration as it
 * was (checked on the plain options), and a loaded one copies (as
 * mp_client_open does) without losing an alias.
 *
 * tests/fuzz/run-fuzzers builds it with libFuzzer; with replay_main.c it
 * replays files for the ordinary test suite. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	mp_config *cfg;
	mp_error err = {0};
	if (size > CONFIG_MAX_FILE_BYTES || mp_config_new(&cfg, &err) < 0)
		return 0;
	uint64_t timeout = cfg->timeout_ms;
	size_t nprimary = cfg->primary.n;
	int r = site_config_load_buffer(cfg, "fuzz.yaml", (const char *)data, size, &err);
	if (r < 0) {
		if (err.message[0] == '\0' || err.code != r)
			abort();
		if (cfg->timeout_ms != timeout || cfg->primary.n != nprimary)
			abort();
	} else {
		struct mp_config copy;
		if (site_config_copy(&copy, cfg) == 0) {
			if (copy.nbuckets != cfg->nbuckets)
				abort();
			for (size_t i = 0; i < cfg->nbuckets; i++)
				if (strcmp(copy.bucket_alias[i], cfg->bucket_alias[i]) != 0)
					abort();
			site_config_release(&copy);
		}
	}
	mp_config_free(cfg);
	return 0;
}
