// A small multi-tool for exec and logs:
//   tool serve          print "serving" then one numbered line every 200 ms, forever
//   tool echo WORDS...  print the words on one line
//   tool cat            copy stdin to stdout until end of file
//   tool fail N         print a line to stderr and exit with N
//   tool lines N        print N numbered lines and exit
//   tool count N        print N numbered lines 200 ms apart, then exit
//   tool read FILES...  print each file's content (an error line for one it cannot read)
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
