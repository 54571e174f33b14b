/* The plain-program side of every fuzz target: replays the files it is
 * given (a corpus and past crashes) through the target's
 * LLVMFuzzerTestOneInput without libFuzzer, so that the ordinary test suite,
 * the sanitizer build and valgrind check past findings again. Each file is
 * read whole, so inputs past a parser's limit are replayed too. Linked into
 * each tests/fuzz/fuzz_*_replay program (meson.build). */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int replay(const char *path)
{
	FILE *fp = fopen(path, "rb");
	if (fp == NULL) {
		perror(path);
		return -1;
	}
	size_t cap = 1 << 16, len = 0;
	uint8_t *buf = malloc(cap);
	while (buf != NULL) {
		len += fread(buf + len, 1, cap - len, fp);
		if (len < cap)
			break;
		uint8_t *more = realloc(buf, cap * 2);
		if (more == NULL) {
			free(buf);
			buf = NULL;
			break;
		}
		buf = more;
		cap *= 2;
	}
	int failed = ferror(fp);
	fclose(fp);
	if (buf == NULL || failed) {
		fprintf(stderr, "%s: %s\n", path, buf == NULL ? "out of memory" : "read error");
		free(buf);
		return -1;
	}
	LLVMFuzzerTestOneInput(buf, len);
	free(buf);
	return 0;
}

int main(int argc, char **argv)
{
	int n = 0;
	for (int a = 1; a < argc; a++) {
		if (replay(argv[a]) < 0)
			return 1;
		n++;
	}
	printf("replayed %d inputs\n", n);
	return n > 0 ? 0 : 1;
}
