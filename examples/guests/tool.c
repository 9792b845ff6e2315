// A small multi-tool for exec and logs:
//   tool serve          print "serving" then one numbered line every 200 ms, forever
//   tool echo WORDS...  print the words on one line
//   tool cat            copy stdin to stdout until end of file
//   tool fail N         print a line to stderr and exit with N
//   tool lines N        print N numbered lines and exit
//   tool count N        print N numbered lines 200 ms apart, then exit
//   tool read FILES...  print each file's content (an error line for one it cannot read)
//   tool write FILE TEXT  write TEXT to FILE (exit 1, with the error on stderr, if it cannot)
//   tool plant DIR TARGET  move DIR aside (to DIR.old) and put a symlink to TARGET in its place
//   tool hold FILE N    open FILE N times without closing it, printing every 100th, then sleep
//   tool fill FILE KB   write KB KiB to FILE, print "filled", then serve
//   tool alloc MB [hold]  allocate and touch MB MiB (1 MiB at a time), print "allocated MB MiB",
//                       then exit 0, or with "hold" keep it and sleep
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <unistd.h>

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "serve";
    if (strcmp(mode, "echo") == 0) {
        for (int i = 2; i < argc; i++) {
            printf(i > 2 ? " %s" : "%s", argv[i]);
        }
        printf("\n");
        return 0;
    }
    if (strcmp(mode, "cat") == 0) {
        char buf[4096];
        size_t n;
        while ((n = fread(buf, 1, sizeof buf, stdin)) > 0) {
            fwrite(buf, 1, n, stdout);
            fflush(stdout);
        }
        return 0;
    }
    if (strcmp(mode, "read") == 0) {
        for (int i = 2; i < argc; i++) {
            FILE *f = fopen(argv[i], "r");
            if (!f) {
                printf("%s: cannot open\n", argv[i]);
                continue;
            }
            char buf[4096];
            size_t n;
            while ((n = fread(buf, 1, sizeof buf, f)) > 0) {
                fwrite(buf, 1, n, stdout);
            }
            fclose(f);
        }
        fflush(stdout);
        return 0;
    }
    if (strcmp(mode, "write") == 0 && argc > 3) {
        FILE *f = fopen(argv[2], "w");
        if (!f || fputs(argv[3], f) < 0 || fclose(f) != 0) {
            fprintf(stderr, "write %s: %s\n", argv[2], strerror(errno));
            return 1;
        }
        return 0;
    }
    if (strcmp(mode, "plant") == 0 && argc > 3) {
        char aside[4096];
        snprintf(aside, sizeof aside, "%s.old", argv[2]);
        if (rename(argv[2], aside) != 0 && errno != ENOENT) {
            fprintf(stderr, "rename %s: %s\n", argv[2], strerror(errno));
            return 1;
        }
        if (symlink(argv[3], argv[2]) != 0) {
            fprintf(stderr, "symlink %s -> %s: %s\n", argv[2], argv[3], strerror(errno));
            return 1;
        }
        printf("planted %s -> %s\n", argv[2], argv[3]);
        return 0;
    }
    if (strcmp(mode, "hold") == 0 && argc > 3) {
        long n = atol(argv[3]);
        for (long i = 1; i <= n; i++) {
            if (!fopen(argv[2], "r")) {
                printf("open %ld failed: %s\n", i, strerror(errno));
                fflush(stdout);
                return 1;
            }
            if (i % 100 == 0) {
                printf("holding %ld\n", i);
                fflush(stdout);
            }
        }
        for (;;) {
            sleep(1);
        }
    }
    if (strcmp(mode, "fill") == 0 && argc > 3) {
        FILE *f = fopen(argv[2], "w");
        static char block[1024];
        memset(block, 'x', sizeof block);
        for (long i = atol(argv[3]); f && i > 0; i--) {
            fwrite(block, 1, sizeof block, f);
        }
        if (!f || fclose(f) != 0) {
            fprintf(stderr, "fill %s: %s\n", argv[2], strerror(errno));
            return 1;
        }
        printf("filled\n");
        fflush(stdout);
        mode = "serve";
    }
    if (strcmp(mode, "alloc") == 0) {
        long mb = argc > 2 ? atol(argv[2]) : 1;
        static void *volatile keep;
        for (long i = 0; i < mb; i++) {
            char *p = malloc(1 << 20);
            if (!p) {
                printf("malloc failed after %ld MiB\n", i);
                return 3;
            }
            memset(p, 1, 1 << 20);
            *(void **)p = keep;
            keep = p;
        }
        printf("allocated %ld MiB\n", mb);
        fflush(stdout);
        if (argc > 3 && strcmp(argv[3], "hold") == 0) {
            for (;;) {
                usleep(1000 * 1000);
            }
        }
        return 0;
    }
    if (strcmp(mode, "fail") == 0) {
        int code = argc > 2 ? atoi(argv[2]) : 1;
        fprintf(stderr, "failing with %d\n", code);
        return code;
    }
    if (strcmp(mode, "lines") == 0) {
        long n = argc > 2 ? atol(argv[2]) : 10;
        for (long i = 1; i <= n; i++) {
            printf("line %ld\n", i);
        }
        return 0;
    }
    if (strcmp(mode, "count") == 0) {
        long n = argc > 2 ? atol(argv[2]) : 5;
        for (long i = 1; i <= n; i++) {
            printf("count %ld\n", i);
            fflush(stdout);
            usleep(200 * 1000);
        }
        return 0;
    }
    printf("serving\n");
    fflush(stdout);
    for (long i = 1;; i++) {
        usleep(200 * 1000);
        printf("tick %ld\n", i);
        fflush(stdout);
    }
}
