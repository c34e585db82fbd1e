// Plain JVM library: no Android imports, so it is built and tested on any JDK 17 (see ../Makefile).
plugins { `java-library` }
java { toolchain { languageVersion.set(JavaLanguageVersion.of(17)) } }
dependencies { testImplementation("junit:junit:4.13.2") }
